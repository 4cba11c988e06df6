"""Gradual transitions and black segments, found in the single decode pass.

``TransitionFinder`` is fed every decoded frame's small detection picture (the one the cut
detector gets) and keeps, per frame, only three statistics: the grey picture's mean and
standard deviation (0..255, after the decoder's limited-range expansion, so black is ~0) and a
32x18 grey thumbnail, in a ring buffer of a few seconds (a few hundred KiB whatever the film's
length). From them it reports ``TransitionGroup``s, each the frames between two shots:

* **black** (a technical cue): at least ``black_min_frames`` frames whose mean and standard
  deviation are both at most ``black_luma`` (a near-uniform dark picture). Shorter runs of such
  frames still end a fade-out or start a fade-in.
* **fade_out**: the frames before a black run whose mean falls every frame (by at least
  ``FADE_STEP`` levels, the classic luma-curve test of fade detection, as PySceneDetect's
  ThresholdDetector does with a fixed level); **fade_in**: the frames after a black run whose mean
  rises every frame. Fades of fewer than ``FADE_MIN_FRAMES`` frames are hard cuts to or from
  black. A fade-out, its black and its fade-in make one group; its boundary (where the next shot
  starts) is the middle of the black when the black is a cue, else the first frame after it.
* **dissolve**: a cross-fade between two different pictures. For every frame ``j`` and a few
  half-widths ``h`` (3 frames up to ``dissolve_max_seconds / 2``) the thumbnail of ``j`` is
  compared with the mean of those at ``j - h`` and ``j + h``: inside a dissolve the frames are a
  linear mix of the pictures on either side, so the residual is small next to their difference.
  Camera motion is not a linear mix (a shifted picture is not the mean of two other shifts), a
  hard cut inside the window leaves half the difference, a brightness change of one picture
  is refused by the end pictures' correlation (``MAX_END_CORRELATION``), and a title fading in or
  out over a picture (a real mix, but not a new shot: Big Buck Bunny's opening) by the share of
  the picture that changes (``MIN_CHANGED_SHARE``). A pan over a smooth picture is nearly linear
  too on a thumbnail: the span's end pictures must not match each other shifted by a few
  pixels (``moved``). Consecutive centres with
  hits form a cluster; the cluster's span is checked frame by frame (every frame near the line
  between the span's end pictures, the mix weight never going back) and the dissolve is the part
  whose weight lies strictly between ``ALPHA_EDGE`` and ``1 - ALPHA_EDGE``. Its boundary is its
  middle frame. Dark end pictures are left to the fade test. (The span checks, the camera-move
  check and the statistics ring are in ``client.media.dissolves``.)

A group is final ``lookahead`` frames or so after its end (a dissolve) or when its fade-in ends;
``open_black`` is the black group still running, ``settled`` the frame before which nothing can
change any more. The finder is deterministic: the same frames give the same groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

from client.media.dissolves import (
    CLUSTER_GAP,
    DISSOLVE_MIN_FRAMES,
    MID_RESIDUAL,
    MIN_CHANGE,
    THUMB_SIZE,
    FrameRing,
    dissolve_span,
    distinct_pictures,
    half_widths,
)

log = logging.getLogger("client.media.transitions")

FADE_STEP = 0.5  # levels per frame a fade's mean must move (noise in a still shot: ~0.2)
FADE_MIN_FRAMES = 3
FADE_MAX_SECONDS = 3.0  # how far back a fade-out is looked for from its black


@dataclass(frozen=True)
class Segment:
    """Frames ``start..end`` (inclusive) of one kind: dissolve, fade_out, fade_in or black."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class TransitionGroup:
    """The transition frames between two shots (or at the film's start/end).

    ``segments`` in film order (a dissolve alone, or any of fade_out, black, fade_in; a black
    segment is there only when it is a cue); ``start``/``end`` span every transition frame,
    the short dark run of a fade included. ``boundary`` is where the next shot should start, None
    when the group touches the film's first frame (nothing before it to cut from).
    """

    start: int
    end: int
    boundary: int | None
    segments: tuple[Segment, ...]

    def covers(self, frame: int) -> bool:
        """Whether a cut at ``frame`` belongs to this group (its first frame up to the frame
        after its last: a cut into or out of the group is the group's own)."""
        return self.start <= frame <= self.end + 1


@dataclass
class _BlackRun:
    """A run of dark frames in progress and what came before it."""

    start: int
    end: int
    fade_out: Segment | None
    fade_in_start: int | None = None  # first frame after the run, once it ended
    last_mean: float = 0.0


class TransitionFinder:
    """Per-frame statistics in, ``TransitionGroup``s out (see module doc)."""

    def __init__(
        self, fps: Fraction, black_luma: float, black_min_frames: int, dissolve_max_seconds: float
    ) -> None:
        self.black_luma = black_luma
        self.black_min_frames = max(1, black_min_frames)
        self.h_max = max(3, round(dissolve_max_seconds * float(fps) / 2))
        self.widths = np.array(half_widths(self.h_max))
        self.fade_max = max(FADE_MIN_FRAMES, round(FADE_MAX_SECONDS * float(fps)))
        # Frames the caller should hold back before committing them to a shot, so a boundary
        # found by the finder is known in time (a dissolve's middle is final about h_max + a
        # few frames later; longer dissolves get their boundary as late as that allows).
        self.lookahead = self.h_max + self.h_max // 2 + CLUSTER_GAP + 2
        self._ring = FrameRing(max(4 * self.h_max + 8, self.fade_max + 2))
        self._first: int | None = None
        self._last = -1
        self._hits: dict[int, int] = {}  # centre -> largest passing half-width
        self._next_centre = 0
        self._cluster: list[tuple[int, int]] = []
        self._gap = 0
        self._black: _BlackRun | None = None
        self._ready: list[TransitionGroup] = []
        self._claimed_until = -1  # last frame of the last reported group

    # --- statistics -----------------------------------------------------------------------------
    def process(self, frame_no: int, bgr: np.ndarray) -> list[TransitionGroup]:
        """Feed one detection picture (frame numbers increasing); returns newly final groups."""
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        mean, std = cv2.meanStdDev(grey)
        thumb = cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        return self.process_stats(frame_no, float(mean[0, 0]), float(std[0, 0]), thumb)

    def process_stats(
        self, frame_no: int, mean: float, std: float, thumb: np.ndarray
    ) -> list[TransitionGroup]:
        """``process`` from the statistics themselves (tests feed synthetic ones)."""
        if self._first is None:
            self._first = frame_no
            self._next_centre = frame_no
        self._ring.put(frame_no, mean, std, thumb)
        self._last = frame_no
        self._black_step(frame_no, mean, std)
        self._dissolve_step(frame_no)
        ready, self._ready = self._ready, []
        return ready

    def finish(self) -> list[TransitionGroup]:
        """After the last frame: the groups still open (a black run to the end has no
        boundary; a dissolve cluster is judged with what was seen)."""
        if self._first is None:
            return []
        black = self._black
        if black is not None:
            if black.fade_in_start is None:
                self._close_black(black, None, film_end=True)
            else:
                self._close_black(black, self._last, film_end=False)
            self._black = None
        while self._next_centre <= self._last:
            self._judge_centre(self._next_centre)
            self._next_centre += 1
        self._close_cluster()
        ready, self._ready = self._ready, []
        return ready

    @property
    def open_black(self) -> tuple[int, int] | None:
        """(first frame, dark frames so far) of a black group still open, with a fade-out
        included in its first frame; None when there is none."""
        black = self._black
        if black is None:
            return None
        start = black.fade_out.start if black.fade_out is not None else black.start
        return start, black.end - black.start + 1

    @property
    def open_group(self) -> tuple[TransitionGroup, bool] | None:
        """The black group still open, when it is already sure to be a transition (a black
        cue, a fade-out before it, or a fade-in running for ``FADE_MIN_FRAMES`` frames), with
        its frames so far; and whether its dark run is still going on (then its boundary, the
        middle of the run, is not known yet and ``boundary`` is None)."""
        black = self._black
        if black is None:
            return None
        dark = black.end - black.start + 1
        fade_in_start = black.fade_in_start
        running = fade_in_start is None
        fading_in = fade_in_start is not None and self._last - fade_in_start + 1 >= FADE_MIN_FRAMES
        is_cue = dark >= self.black_min_frames
        if not (is_cue or black.fade_out is not None or fading_in):
            return None
        start = black.fade_out.start if black.fade_out is not None else black.start
        boundary = None
        if not running and start != self._first:
            boundary = black.start + dark // 2 if is_cue else black.end + 1
        group = TransitionGroup(start, self._last, boundary, ())
        return group, running

    @property
    def black_start(self) -> int | None:
        """First dark frame of the open black group (None without one)."""
        return self._black.start if self._black is not None else None

    @property
    def first_frame(self) -> int | None:
        """The first frame fed (the film's, for groups without a boundary)."""
        return self._first

    @property
    def settled(self) -> int:
        """Every group that ends before this frame has been reported."""
        bound = self._last + 1 - self.fade_max
        bound = min(bound, self._next_centre - self.h_max)
        if self._cluster:
            first_centre, h = self._cluster[0]
            bound = min(bound, first_centre - h)
        if self._black is not None:
            open_start = self.open_black
            assert open_start is not None
            bound = min(bound, open_start[0])
        return bound

    # --- black and fades ------------------------------------------------------------------------
    def _dark(self, mean: float, std: float) -> bool:
        return mean <= self.black_luma and std <= self.black_luma

    def _black_step(self, frame_no: int, mean: float, std: float) -> None:
        black = self._black
        dark = self._dark(mean, std)
        if black is not None and black.fade_in_start is None:
            if dark:
                black.end = frame_no
                return
            black.fade_in_start = frame_no
            black.last_mean = mean
            return
        if black is not None:  # a fade-in may be running
            assert black.fade_in_start is not None
            if dark:  # dark again: the bright frames were a flicker inside the black
                black.end, black.fade_in_start = frame_no, None
                return
            if mean >= black.last_mean + FADE_STEP and frame_no - black.fade_in_start < (
                self.fade_max
            ):
                black.last_mean = mean
                return
            self._close_black(black, frame_no - 1, film_end=False)
            self._black = None
        if dark:
            self._black = _BlackRun(frame_no, frame_no, self._fade_out_before(frame_no))

    def _fade_out_before(self, black_start: int) -> Segment | None:
        """The fade-out ending just before the first dark frame, if the mean fell every frame
        for at least ``FADE_MIN_FRAMES`` frames."""
        assert self._first is not None
        lowest = max(self._first, black_start - self.fade_max, self._claimed_until + 1)
        k = black_start - 1
        while k - 1 >= lowest and self._ring.mean(k - 1) >= self._ring.mean(k) + FADE_STEP:
            k -= 1
        if black_start - k >= FADE_MIN_FRAMES and k < black_start:
            return Segment("fade_out", k, black_start - 1)
        return None

    def _close_black(self, black: _BlackRun, fade_in_end: int | None, film_end: bool) -> None:
        """Report a black group (fade-out, dark run, fade-in) when it makes a transition."""
        segments: list[Segment] = []
        if black.fade_out is not None:
            segments.append(black.fade_out)
        dark_frames = black.end - black.start + 1
        is_cue = dark_frames >= self.black_min_frames
        if is_cue:
            segments.append(Segment("black", black.start, black.end))
        fade_in = None
        start_in = black.fade_in_start
        if (
            start_in is not None
            and fade_in_end is not None
            and fade_in_end - start_in + 1 >= FADE_MIN_FRAMES
        ):
            fade_in = Segment("fade_in", start_in, fade_in_end)
            segments.append(fade_in)
        if not segments:
            return  # a dark flash or a hard cut through a frame or two of black
        start = black.fade_out.start if black.fade_out is not None else black.start
        end = fade_in.end if fade_in is not None else black.end
        boundary: int | None
        if start == self._first or film_end:
            boundary = None
        elif is_cue:
            boundary = black.start + dark_frames // 2
        else:
            boundary = black.end + 1
        self._emit(TransitionGroup(start, end, boundary, tuple(segments)))

    def _emit(self, group: TransitionGroup) -> None:
        self._claimed_until = max(self._claimed_until, group.end)
        self._ready.append(group)

    # --- dissolves ------------------------------------------------------------------------------
    def _dissolve_step(self, f: int) -> None:
        assert self._first is not None
        widths = self.widths[f - 2 * self.widths >= self._first]
        if len(widths):
            ring = self._ring
            tf = ring.thumb(f)
            ta = ring.thumbs[(f - 2 * widths) % ring.size]
            tj = ring.thumbs[(f - widths) % ring.size]
            diff = np.sqrt(np.mean((tf - ta) ** 2, axis=1))
            resid = np.sqrt(np.mean((tj - 0.5 * (ta + tf)) ** 2, axis=1))
            passing = (diff >= MIN_CHANGE) & (resid <= MID_RESIDUAL * diff)
            for h in widths[passing].tolist():
                if distinct_pictures(self._ring, f - 2 * h, f, self.black_luma):
                    centre = f - h
                    self._hits[centre] = max(h, self._hits.get(centre, 0))
        while self._next_centre <= f - self.h_max:
            self._judge_centre(self._next_centre)
            self._next_centre += 1

    def _judge_centre(self, centre: int) -> None:
        """No more hits can come for ``centre``: grow the cluster or close it."""
        h = self._hits.pop(centre, 0)
        if h:
            self._cluster.append((centre, h))
            self._gap = 0
        elif self._cluster:
            self._gap += 1
            if self._gap > CLUSTER_GAP:
                self._close_cluster()

    def _close_cluster(self) -> None:
        cluster, self._cluster, self._gap = self._cluster, [], 0
        if not cluster:
            return
        black = self.open_black
        if black is not None and max(c + h for c, h in cluster) >= black[0] - 1:
            return  # the frames darken into a fade: the fade test has them
        first = min(c - h for c, h in cluster)
        if first <= self._claimed_until:
            return  # its windows lean on a fade's frames (a fade-in is a mix with black too)
        first = max(first, self._last - self._ring.size + 1)
        last = min(max(c + h for c, h in cluster), self._last)
        if last - first < 2 * DISSOLVE_MIN_FRAMES:
            return
        span = dissolve_span(self._ring, first, last, self.black_luma)
        if span is None:
            return
        s, e = span
        self._emit(TransitionGroup(s, e, s + (e - s + 1) // 2, (Segment("dissolve", s, e),)))
