"""Shot boundaries from detector cuts and transitions, and each shot's transition fields.

``BoundaryPlanner`` decides, right before each frame is committed to a shot
(``client.media.assembly``), whether a new shot starts there. The decode pass holds frames back
``TransitionFinder.lookahead`` frames, so by then the finder has seen that many frames past it:

* a transition group (``client.media.transitions``) makes one boundary: at its ``boundary``
  frame (a dissolve's middle, the middle of a black cue, else the first frame after the dark
  run), or at the first frame after that the minimum shot length allows while still inside the
  group; while a long dark run is still going on, ``lookahead`` frames into it (never later
  than its middle);
* a detector cut inside a group (from its first frame to the frame after its last) is the
  group's own and is dropped; any other detector cut is a hard cut, exactly as without
  transitions;
* except a hard cut to or from black: a detector cut on a dark run's first frame with no
  fade-out before it, or on the frame after its last with no fade-in after it, is kept, so a
  black (or very dark) stretch between two hard cuts is a shot of its own when it is as long as
  the minimum shot (a 2 s black card, a night shot at 5 % brightness), as without transitions;
  its frames are still a black cue, excluded from the usable frames;
* a group found only after a detector cut inside it was committed keeps that cut as its one
  boundary (a committed frame cannot move to another shot).

``describe`` gives a closed shot's fields (see the field spec in ``client.media.shot``): its
usable frames ``in_frame..out_frame`` (transition frames at either end excluded), the
transitions at its start and end, and the black cues inside it. Without a finder
(``--no-transitions``) every boundary is a detector cut, the usable frames are the whole shot
and ``technical_cues`` is None (not looked for). Memory: the groups, cuts and frame times of the
last ``HISTORY_SECONDS``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from client.media.shot import Shot
from client.media.smpte import smpte
from client.media.transitions import Segment, TransitionFinder, TransitionGroup

log = logging.getLogger("client.media.boundaries")

HISTORY_SECONDS = 60.0  # every frame's time is kept this long (groups are final well within)


@dataclass(frozen=True)
class ShotEdges:
    """Where a shot sits among the film's boundaries: whether its first / last frame is the
    film's (or the time range's) start / end rather than a shot boundary."""

    film_start: bool
    film_end: bool


class BoundaryPlanner:
    """Detector cuts and transition groups in, one decision per committed frame out (see
    module doc)."""

    def __init__(
        self, finder: TransitionFinder | None, fps: Fraction, origin: float | None = None
    ) -> None:
        self.finder = finder
        self.fps = fps
        self._cuts: deque[int] = deque()
        self._groups: list[TransitionGroup] = []
        self._emitted: deque[int] = deque()  # boundaries the assembler took, in order
        self._times: deque[float] = deque(maxlen=max(100, round(HISTORY_SECONDS * float(fps))))
        self._times_first = 0  # frame number of _times[0]
        # Stream time of the film's first frame; a pass starting mid-film is given it.
        self._origin: float | None = origin
        self._kept: dict[int, float] = {}  # times of group frames and shot starts, until described

    # --- input ----------------------------------------------------------------------------------
    def add_cuts(self, cuts: list[int]) -> None:
        """Detector cuts (a new shot at each frame number)."""
        self._cuts.extend(cuts)

    def add_groups(self, groups: list[TransitionGroup]) -> None:
        """Final transition groups from the finder (any order)."""
        if groups:
            self._groups.extend(groups)
            self._groups.sort(key=lambda g: g.start)
            for g in groups:
                for frame in range(g.start, g.end + 2):
                    self._keep(frame)

    def _keep(self, frame_no: int) -> None:
        i = frame_no - self._times_first
        if 0 <= i < len(self._times):
            self._kept[frame_no] = self._times[i]

    def frame_time(self, frame_no: int, t: float) -> None:
        """The stream time of a decoded frame (for the records' times)."""
        if not self._times:
            self._times_first = frame_no
        if self._origin is None:
            self._origin = t
        if len(self._times) == self._times.maxlen:
            self._times_first += 1
        self._times.append(t - self._origin)

    def forget_before(self, frame_no: int) -> None:
        """Drop what only frames before ``frame_no`` need (described shots)."""
        self._groups = [g for g in self._groups if g.end + 1 >= frame_no]
        for old in [f for f in self._kept if f < frame_no]:
            del self._kept[old]
        while self._emitted and self._emitted[0] < frame_no - 1:
            self._emitted.popleft()

    # --- decisions ------------------------------------------------------------------------------
    def starts_shot(self, frame_no: int) -> bool:
        """Whether a new shot should start at ``frame_no`` (called before committing it)."""
        cut = False
        while self._cuts and self._cuts[0] <= frame_no:
            cut = self._cuts.popleft() == frame_no or cut
        if self.finder is None:
            return cut
        for group, running in self._candidates():
            if not group.covers(frame_no):
                continue
            if cut and _hard_cut_at_dark_edge(group, frame_no):
                return True
            cut = False  # a detector cut inside a transition is the transition's own
            if self._has_boundary(group):
                continue
            if group.boundary is not None and frame_no >= group.boundary:
                return True
            if running and group.boundary is None and self._black_boundary_due(frame_no):
                return True
        return cut

    def _candidates(self) -> list[tuple[TransitionGroup, bool]]:
        out = [(g, False) for g in self._groups]
        assert self.finder is not None
        open_group = self.finder.open_group
        if open_group is not None:
            out.append(open_group)
        return out

    def _black_boundary_due(self, frame_no: int) -> bool:
        """A dark run still going on: cut ``lookahead`` frames into it (its middle is at least
        that far, since the finder has seen ``lookahead`` more dark frames)."""
        assert self.finder is not None
        start = self.finder.black_start
        first = self.finder.first_frame
        return (
            start is not None
            and start != first
            and frame_no - start >= min(self.finder.lookahead, self.finder.black_min_frames)
            and frame_no - start >= self.finder.lookahead
        )

    def _has_boundary(self, group: TransitionGroup) -> bool:
        return any(group.covers(b) for b in self._emitted)

    def is_boundary(self, frame_no: int) -> bool:
        """Whether a shot started at ``frame_no`` (a recent frame, see ``forget_before``)."""
        return frame_no in self._emitted

    def committed(self, frame_no: int, new_shot: bool) -> None:
        """The assembler committed ``frame_no``; ``new_shot``: a shot starts there."""
        if new_shot:
            self._emitted.append(frame_no)
            self._keep(frame_no)

    # --- shot fields ----------------------------------------------------------------------------
    def _touching(self, start: int, end: int) -> list[TransitionGroup]:
        groups = list(self._groups)
        if self.finder is not None and self.finder.open_group is not None:
            groups.append(self.finder.open_group[0])
        return [g for g in groups if g.start <= end + 1 and g.end >= start - 1]

    def usable(self, start: int, end: int) -> tuple[int, int]:
        """The frames of shot ``start..end`` outside transitions at its ends (the whole shot
        when nothing would be left)."""
        first, last = self._usable(start, end)
        return (first, last) if first <= last else (start, end)

    def _usable(self, start: int, end: int) -> tuple[int, int]:
        first, last = start, end
        if self.finder is None:
            return first, last
        for g in self._touching(start, end):
            if g.start <= first <= g.end:
                first = g.end + 1
            if g.start <= last <= g.end:
                last = g.start - 1
        return first, last

    def describe(self, shot: Shot, edges: ShotEdges) -> dict[str, Any]:
        """The transition fields of a closed shot (see module doc)."""
        start, end = shot.start_frame, shot.end_frame
        self._kept.setdefault(start, shot.start_time)
        self._kept.setdefault(end + 1, shot.end_time)
        groups = self._touching(start, end) if self.finder is not None else []
        first, last = self._usable(start, end)
        usable = first <= last
        record: dict[str, Any] = {
            "in_frame": first if usable else None,
            "out_frame": last if usable else None,
            "in_time": self._time(first) if usable else None,
            "out_time": self._time(last + 1) if usable else None,
            "in_smpte": smpte(first, self.fps) if usable else None,
            "out_smpte": smpte(last + 1, self.fps) if usable else None,
            "transition_in": self._incoming(start, edges.film_start, groups),
            "transition_out": self._outgoing(end, edges.film_end, groups),
            "technical_cues": None,
        }
        if self.finder is not None:
            record["technical_cues"] = [
                self._segment(Segment("black", max(s.start, start), min(s.end, end)))
                for g in groups
                for s in g.segments
                if s.kind == "black" and s.start <= end and s.end >= start
            ]
        return record

    def _incoming(
        self, start: int, film_start: bool, groups: list[TransitionGroup]
    ) -> dict[str, Any] | None:
        if film_start and start != 0:
            return None  # the time range's start, not a boundary
        for g in groups:
            if not (g.covers(start) if not film_start else g.start <= start <= g.end):
                continue
            kinds = {s.kind: s for s in g.segments}
            if "dissolve" in kinds:
                return self._segment(kinds["dissolve"])
            if "fade_in" in kinds:
                return self._segment(kinds["fade_in"])
            if film_start:
                return None
            dark_end = kinds["black"].end if "black" in kinds else g.end
            return self._segment(Segment("cut", dark_end + 1, dark_end + 1))
        return None if film_start else self._segment(Segment("cut", start, start))

    def _outgoing(
        self, end: int, film_end: bool, groups: list[TransitionGroup]
    ) -> dict[str, Any] | None:
        nxt = end + 1
        for g in groups:
            if film_end and not (g.boundary is None and g.start <= end <= g.end):
                continue  # only a fade to black at the film's end ends the last shot
            if not film_end and not g.covers(nxt):
                continue
            kinds = {s.kind: s for s in g.segments}
            if "dissolve" in kinds:
                return self._segment(kinds["dissolve"])
            if "fade_out" in kinds:
                return self._segment(kinds["fade_out"])
            if film_end:
                return None
            dark_start = kinds["black"].start if "black" in kinds else g.start
            return self._segment(Segment("cut", dark_start, dark_start))
        return None if film_end else self._segment(Segment("cut", nxt, nxt))

    def _segment(self, seg: Segment) -> dict[str, Any]:
        """A transition or cue record: a cut occupies no frame (its times are both the new
        shot's first frame's), anything else ends at the time of the frame after its last."""
        after = seg.start if seg.kind == "cut" else seg.end + 1
        return {
            "kind": seg.kind,
            "start_frame": seg.start,
            "end_frame": seg.start if seg.kind == "cut" else seg.end,
            "start_time": self._time(seg.start),
            "end_time": self._time(after),
        }

    def _time(self, frame_no: int) -> float:
        """Seconds from the film's first frame to ``frame_no``: the frame's own timestamp
        (kept for transition frames and shot starts, else while recent); past the last decoded
        frame one nominal frame per frame."""
        if frame_no in self._kept:
            return round(self._kept[frame_no], 6)
        i = frame_no - self._times_first
        if 0 <= i < len(self._times):
            return round(self._times[i], 6)
        if self._times and i >= len(self._times):
            step = 1 / float(self.fps)
            return round(self._times[-1] + (i - len(self._times) + 1) * step, 6)
        log.warning("frame %d: its time is no longer known; frame / fps is used", frame_no)
        return round(float(frame_no / self.fps), 6)


def _hard_cut_at_dark_edge(group: TransitionGroup, frame_no: int) -> bool:
    """Whether a detector cut at ``frame_no`` is a hard cut into or out of the group's dark
    run (no fade on that side, no dissolve): such a cut is kept (see the module doc)."""
    kinds = {seg.kind for seg in group.segments}
    if "dissolve" in kinds:
        return False
    if frame_no == group.start and "fade_out" not in kinds:
        return True
    return frame_no == group.end + 1 and "fade_in" not in kinds
