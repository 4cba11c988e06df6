"""Shot assembly: committed frames and cut frame numbers in, closed shots out.

``ShotAssembler`` enforces the minimum shot length for every shot, the last one included (see
``client.media.scan`` for why and how the hold works); ``ScannedShot`` is a closed shot with its
picked sample frames, not yet encoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

from client.media.frames import Candidate, ShotReservoir
from client.media.shot import Shot


@dataclass
class ScannedShot:
    """A closed shot with its sample frames (not yet encoded) and its stream times."""

    shot: Shot
    samples: list[Candidate]
    stream_start: float  # stream time (s) of the shot's first frame, for audio alignment
    stream_end: float


@dataclass
class _HeldShot:
    """A shot whose cut is known, kept back until the next shot is long enough."""

    shot_id: int
    start: tuple[int, float]  # (frame_no, stream time) of its first frame
    last: tuple[int, float]  # (frame_no, stream time) of its last frame
    end_time: float  # stream time where it ends: the first frame of the next shot
    reservoir: ShotReservoir  # its own candidates, frozen at the cut
    merged: ShotReservoir  # the same candidates, still taking the next shot's frames


class ShotAssembler:
    """Turns committed frames and cut frame numbers into closed shots, with every shot (the
    last included) at least ``min_frames`` frames long (see module doc).

    ``commit`` must be called for every frame in order, once any cut at or before that frame has
    been given to ``add_cuts``; it returns the shots closed by that frame (at most one).
    ``finish`` closes the last shot after the final frame. ``usable(first, last)``, when given,
    says which frames of a closing shot its samples should come from (its frames outside
    transitions, ``client.media.boundaries``).
    """

    def __init__(
        self,
        fps: Fraction,
        capacity: int,
        count: int,
        min_frames: int,
        usable: Callable[[int, int], tuple[int, int]] | None = None,
        origin: float | None = None,
    ) -> None:
        self.fps = fps
        self.usable = usable
        self.capacity = capacity
        self.count = count
        self.min_frames = max(1, min_frames)
        self.closed = 0  # shot ids handed out so far (a held shot has its id)
        self.last: tuple[int, float] | None = None  # the last committed frame
        # Stream time of the film's first frame (time 0 of shots); a pass starting mid-film is
        # given it.
        self.origin: float | None = origin
        self._step: float | None = None  # time between the last two committed frames
        self._cuts: deque[int] = deque()
        self._start: tuple[int, float] | None = None  # first frame of the open shot
        self._reservoir = ShotReservoir(capacity, count)
        self._held: _HeldShot | None = None

    @property
    def open_start(self) -> int | None:
        """First frame of the open shot (None before the first commit)."""
        return self._start[0] if self._start is not None else None

    def add_cuts(self, cuts: Iterable[int]) -> None:
        """Cut frame numbers reported by the detector (a cut starts a new shot)."""
        self._cuts.extend(cuts)

    def commit(self, frame_no: int, t: float, frame: object) -> list[ScannedShot]:
        """Assign the frame to its shot; returns the shot it lets close, if any."""
        if self._start is None:
            self._start = (frame_no, t)
            if self.origin is None:
                self.origin = t
            self._reservoir.reset(frame_no)
        elif self._cuts and self._cuts[0] <= frame_no:
            while self._cuts and self._cuts[0] <= frame_no:
                self._cuts.popleft()
            # A cut that would leave the open shot too short is dropped (the detectors already
            # keep their minimum between cuts; this also covers the first shot). A long enough
            # open shot has already released the held shot (same length test as below).
            assert self.last is not None
            if self.last[0] - self._start[0] + 1 >= self.min_frames:
                assert self._held is None
                self.closed += 1
                self._held = _HeldShot(
                    self.closed,
                    self._start,
                    self.last,
                    t,
                    self._reservoir,
                    self._reservoir.clone(),
                )
                self._start = (frame_no, t)
                self._reservoir = ShotReservoir(self.capacity, self.count)
                self._reservoir.reset(frame_no)
        candidate = Candidate(frame_no, frame)
        if self._reservoir.wants(frame_no):
            self._reservoir.add(candidate)
        held = self._held
        if held is not None and held.merged.wants(frame_no):
            held.merged.add(candidate)
        if self.last is not None and t > self.last[1]:
            self._step = t - self.last[1]
        self.last = (frame_no, t)
        if held is not None and frame_no - self._start[0] + 1 >= self.min_frames:
            # The new shot is long enough to stand: the held shot keeps its cut.
            self._held = None
            return [self._close(held.shot_id, held.start, held.last, held.end_time, held.reservoir)]
        return []

    def finish(self) -> ScannedShot | None:
        """The film's last shot (None if no frame was committed). A last shot shorter than
        ``min_frames`` is merged into the held shot before it."""
        if self._start is None or self.last is None:
            return None
        held, self._held = self._held, None
        # The last frame lasts as long as the one before it (one nominal frame if alone).
        end = self.last[1] + (self._step if self._step is not None else 1.0 / float(self.fps))
        if held is not None:
            return self._close(held.shot_id, held.start, self.last, end, held.merged)
        self.closed += 1
        return self._close(self.closed, self._start, self.last, end, self._reservoir)

    def _close(
        self,
        shot_id: int,
        start: tuple[int, float],
        last: tuple[int, float],
        end_time: float,
        reservoir: ShotReservoir,
    ) -> ScannedShot:
        origin = self.origin if self.origin is not None else start[1]
        shot = Shot(
            shot_id=shot_id,
            start_frame=start[0],
            end_frame=last[0],
            fps=self.fps,
            start_seconds=start[1] - origin,
            end_seconds=end_time - origin,
        )
        within = self.usable(start[0], last[0]) if self.usable is not None else None
        return ScannedShot(
            shot=shot,
            samples=reservoir.pick(last[0], within),
            stream_start=start[1],
            stream_end=end_time,
        )
