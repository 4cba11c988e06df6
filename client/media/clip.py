"""Clipping the decode pass's shots to a time range (``--start``/``--end``, ``TimeRange``).

The pass still decodes from the film's first frame: the detectors' history (the adaptive
detector's rolling window) and the minimum shot length decide where the cuts fall, and the
shot ids count from the film's first shot, so only a pass from frame 0 gives the very shots,
frame numbers and ids of a whole-film run (a keyframe seek would change them near the range's
start). What the range saves is everything else: shots before it are not sampled, encoded,
analysed or written, and decoding stops ``min_frames`` frames after the range's last frame
(then every cut up to that frame is final, see ``client.media.assembly``).

A shot straddling a bound is clipped to the range: it starts at the first frame at or after
``start`` and ends at the last frame before ``end``, keeping the film's real frame numbers (its
timecodes stay true to the source) and its id. Its samples are spread over the clipped part
only: ``RangeClipper`` mirrors the assembler's open and held shots with its own reservoirs that
take in-range frames only.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from client.media.assembly import ScannedShot
from client.media.frames import Candidate, ShotReservoir
from client.media.shot import Shot
from client.options import TimeRange


@dataclass
class _Part:
    """The in-range part of a shot: its id, first frame, and its in-range candidates (None
    while none of its frames was in the range)."""

    shot_id: int
    start: tuple[int, float]  # (frame_no, stream time) of the shot's first frame
    reservoir: ShotReservoir | None = None


class RangeClipper:
    """Follows the assembler frame by frame (``commit``, with whether the frame started a new
    shot) and turns its closed shots into clipped ones (``closed``); ``done`` once the pass may
    stop, when ``tail`` gives the last shot, still open in the assembler (see module doc)."""

    def __init__(
        self, span: TimeRange, fps: Fraction, capacity: int, count: int, min_frames: int
    ) -> None:
        self.span = span
        self.fps = fps
        self.capacity = capacity
        self.count = count
        self.min_frames = max(1, min_frames)
        self.origin: float | None = None  # stream time of the film's first frame
        self.first: tuple[int, float] | None = None  # first in-range frame
        self.last: tuple[int, float] | None = None  # last in-range frame so far
        self.after: float | None = None  # stream time of the first frame at or after the end
        self.done = False
        self._open: _Part | None = None
        self._held: _Part | None = None
        self._merged: ShotReservoir | None = None  # the held shot's, still taking frames

    def _new_reservoir(self, frame_no: int) -> ShotReservoir:
        reservoir = ShotReservoir(self.capacity, self.count)
        reservoir.reset(frame_no)
        return reservoir

    def commit(self, frame_no: int, t: float, frame: object, cut: bool, open_id: int) -> None:
        """The assembler committed this frame; ``cut``: it started shot ``open_id``."""
        if self._open is None:
            self.origin = t
            self._open = _Part(open_id, (frame_no, t))
        elif cut:
            self._held = self._open
            held = self._held.reservoir
            self._merged = held.clone() if held is not None else None
            self._open = _Part(open_id, (frame_no, t))
        assert self.origin is not None
        rel = t - self.origin
        if self.span.contains(rel):
            if self.first is None:
                self.first = (frame_no, t)
            self.last = (frame_no, t)
            candidate = Candidate(frame_no, frame)
            if self._open.reservoir is None:
                self._open.reservoir = self._new_reservoir(frame_no)
            if self._open.reservoir.wants(frame_no):
                self._open.reservoir.add(candidate)
            if self._held is not None:
                if self._merged is None:
                    self._merged = self._new_reservoir(frame_no)
                if self._merged.wants(frame_no):
                    self._merged.add(candidate)
        elif self.span.end is not None and rel >= self.span.end:
            if self.after is None:
                self.after = t
            self.done = self.last is None or frame_no - self.last[0] >= self.min_frames

    def closed(self, scanned: ScannedShot, final: bool = False) -> ScannedShot | None:
        """A shot the assembler closed (``final``: by ``finish``), clipped to the range; None
        when none of its frames is in the range."""
        if final:
            part = self._held if self._held is not None else self._open
            reservoir = self._merged if self._held is not None else None
            if reservoir is None and part is not None:
                reservoir = part.reservoir
        else:
            part, reservoir = self._held, self._held.reservoir if self._held else None
            self._held, self._merged = None, None
        if part is None or reservoir is None:
            return None
        return self._clip(scanned.shot.shot_id, part.start, reservoir, scanned)

    def tail(self) -> ScannedShot | None:
        """The shot holding the range's last frame when the pass stops early (``done``)."""
        part = self._held if self._held is not None else self._open
        if part is None or part.reservoir is None:
            return None
        return self._clip(part.shot_id, part.start, part.reservoir, None)

    def _clip(
        self,
        shot_id: int,
        start: tuple[int, float],
        reservoir: ShotReservoir,
        scanned: ScannedShot | None,
    ) -> ScannedShot:
        """The part of a shot in the range, its samples from its in-range candidates
        (``scanned`` as closed by the assembler, or None for the tail, which ends at the
        range's last frame)."""
        assert self.origin is not None and self.first is not None and self.last is not None
        first = reservoir.start_frame
        last = self.last[0] if scanned is None else min(scanned.shot.end_frame, self.last[0])
        if scanned is not None and (first, last) == (
            scanned.shot.start_frame,
            scanned.shot.end_frame,
        ):
            return scanned  # wholly in the range: exactly the whole-film run's shot
        begin = start[1] if first == start[0] else self.first[1]
        if scanned is not None and last == scanned.shot.end_frame:
            end = scanned.stream_end
        else:
            assert self.after is not None  # the range ends before the shot: a frame followed
            end = self.after
        shot = Shot(
            shot_id=shot_id,
            start_frame=first,
            end_frame=last,
            fps=self.fps,
            start_seconds=begin - self.origin,
            end_seconds=end - self.origin,
        )
        return ScannedShot(shot, reservoir.pick(last), begin, end)
