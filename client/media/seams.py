"""What lets a decode pass start mid-film and still agree with the one pass from frame 0.

``DecodeWindow`` is handed to ``ShotScanner`` by a chunk worker: it seeks the decoder to a
keyframe, numbers every decoded frame by its pts from the film's index
(``client.media.keyframes``), and gives the film's origin (the first frame's stream time), so
frame numbers and times are those of the one-pass run. It refuses (``ChunkUnsafe``) any frame
that is not the next one of the index: a frame the decoder dropped or could not decode would
shift the one-pass numbering, which only a pass from frame 0 reproduces.

The sync key (``sync_key``): the one-pass scanner is a deterministic machine fed frames. Its
state, right after a shot starts at frame ``f``, is of two kinds: what is a pure function of the
last few decoded frames (the adaptive detector's score window and last picture, the transition
finder's statistics ring and midpoint hits, the held frames, frame times), identical in two
passes once both have decoded ``warm_frames`` frames; and history, which the key lists: the
detector's last cut while it still suppresses cuts (its minimum scene length), the cuts and
transition groups not yet used or still touching shots to come, the boundaries inside those
groups, the finder's open dissolve cluster and black run and the end of its last group (while a
fade-out search can still reach it), and the assembler's pending cuts and last frame. Two
passes with equal keys at ``f`` make the same decisions from ``f`` on, so the shots from ``f``
on are the same. A key is only given where none of that history reaches back to the first
frame a pass decoded (else None): a worker's first shots, and anything still open since its
start, are never compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
from scenedetect import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector

from client.media.detection import min_shot_frames
from client.media.transitions import TransitionFinder
from client.options import ExtractOptions

if TYPE_CHECKING:
    from client.media.scan import ShotScanner

SyncKey = tuple[Any, ...]


class ChunkUnsafe(Exception):
    """This pass cannot reproduce the one-pass run from here (the message says why)."""


@dataclass
class DecodeWindow:
    """Where a chunk's pass starts and how its frames are numbered (see module doc).

    ``seek_pts`` None: decode from the film's start (then the first frame must be frame 0).
    ``on_boundary(frame_no, key)`` is called for every shot start with its sync key (None
    where the pass cannot vouch for its history yet).
    """

    pts: Sequence[int]
    origin: float
    seek_pts: int | None = None
    on_boundary: Callable[[int, SyncKey | None], None] | None = None
    warm: int = 0
    first_frame: int | None = None  # the first frame this pass decoded
    _rank: dict[int, int] = field(default_factory=dict, repr=False)
    _next: int | None = None

    def seek(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> None:
        """Position the demuxer on the keyframe (a no-op from the film's start)."""
        if not self._rank:
            self._rank = {p: k for k, p in enumerate(self.pts)}
        if self.seek_pts is not None:
            container.seek(self.seek_pts, stream=stream, backward=True, any_frame=False)

    def number(self, frame: av.VideoFrame) -> int:
        """The one-pass frame number of a decoded frame (ChunkUnsafe when it is not the next
        frame of the index)."""
        rank = self._rank.get(frame.pts) if frame.pts is not None else None
        if rank is None:
            raise ChunkUnsafe(f"a decoded frame (pts {frame.pts}) is not in the film's index")
        if self._next is None:
            if self.seek_pts is None and rank != 0:
                raise ChunkUnsafe(f"the first decoded frame is frame {rank} of the index, not 0")
            self.first_frame = rank
        elif rank != self._next:
            raise ChunkUnsafe(f"frame {self._next} was expected, the decoder gave frame {rank}")
        self._next = rank + 1
        return rank


def warm_frames(options: ExtractOptions, fps: Fraction, capacity: int) -> int:
    """Frames a pass must decode before its pure state matches the one pass's: the transition
    finder's ring and widest midpoint window, the frames held back, the detector's window."""
    detection = options.detection
    hold = 2  # the adaptive detector's window (the other detectors report at once)
    extra = 0
    if detection.transitions:
        finder = TransitionFinder(
            fps, detection.black_luma, detection.black_min_frames, detection.dissolve_max_seconds
        )
        hold = max(hold, min(finder.lookahead, capacity))
        extra = finder._ring.size + 2 * finder.h_max
    return extra + hold + 2 * 2 + 4


# Where each detector keeps its last cut (a FrameTimecode, or None before the first frame).
_LAST_CUT: dict[type, tuple[str, ...]] = {
    AdaptiveDetector: ("_last_cut",),
    ContentDetector: ("_flash_filter", "_last_above"),
    HashDetector: ("_last_scene_cut",),
    HistogramDetector: ("_last_cut",),
}


def _last_cut(detector: object) -> int | None:
    path = _LAST_CUT.get(type(detector))
    if path is None:
        raise ChunkUnsafe(f"no sync key for the detector {type(detector).__name__}")
    value: Any = detector
    for name in path:
        value = getattr(value, name, None)
    return int(value.frame_num) if value is not None else None


def sync_key(scanner: ShotScanner, frame_no: int) -> SyncKey | None:
    """The history of ``scanner`` right after a shot started at ``frame_no`` (see module doc),
    or None when some of it may reach back to the pass's first frame."""
    window = scanner.window
    assert window is not None and window.first_frame is not None
    first = window.first_frame
    if frame_no - first < window.warm:
        return None
    cut_finder = scanner._cut_finder
    shots = scanner._assembler
    planner = scanner._planner
    finder = scanner._transitions
    held = scanner._held_frames
    newest = held[-1][0] if held else frame_no
    min_frames = min_shot_frames(scanner.options.detection, scanner.info.fps)
    last_cut = _last_cut(cut_finder.detector)
    if last_cut is not None and last_cut < newest - min_frames - cut_finder.delay - 2:
        last_cut = None  # too old to suppress any cut still to come
    if last_cut is not None and last_cut <= first:
        return None
    reported = tuple(sorted(c for c in cut_finder._reported if c >= frame_no - cut_finder.delay))
    groups = [g for g in planner._groups if g.end >= frame_no - 2]
    starts = [g.start for g in groups]
    finder_key: tuple[Any, ...] = ()
    if finder is not None:
        open_group = finder.open_group
        if open_group is not None:
            starts.append(open_group[0].start)
        black = finder._black
        if black is not None:
            starts.append(black.fade_out.start if black.fade_out is not None else black.start)
        cluster = finder._cluster
        if cluster:
            starts.append(min(c - h for c, h in cluster))
        floor = frame_no - finder._ring.size - finder.fade_max - 2 * finder.h_max
        if cluster:
            floor = min(floor, min(c - h for c, h in cluster) - 1)
        finder_key = (
            tuple(sorted(finder._hits.items())),
            finder._next_centre,
            tuple(cluster),
            finder._gap,
            astuple(black) if black is not None else None,
            max(finder._claimed_until, floor),
            finder._last,
        )
    if starts and min(starts) <= first:
        return None
    lowest = min([*starts, frame_no])
    emitted = tuple(b for b in planner._emitted if b >= lowest)
    return (
        frame_no,
        newest,
        last_cut,
        reported,
        tuple(planner._cuts),
        tuple(groups),
        emitted,
        finder_key,
        tuple(shots._cuts),
        shots.last,
        shots._step,
    )
