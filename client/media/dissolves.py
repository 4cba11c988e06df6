"""The dissolve tests of ``client.media.transitions``: the frame-statistics ring, the end
pictures' checks, the camera-move check and the frame-by-frame check of a candidate's span.

A dissolve's frames are a linear mix of the pictures on either side, so (see
``TransitionFinder``) its candidates come from a midpoint test on 32x18 thumbnails; what is
here decides whether a candidate span really is one: two distinct, not dark end pictures that
differ over most of the frame (``MIN_CHANGED_SHARE``; a title fading in over a picture changes
a small part), that are not one picture moved (``moved``: a pan over a smooth picture is nearly
linear on a thumbnail too), every frame near the line between them (``SPAN_RESIDUAL``) with a
mix weight that never goes back nor jumps (a hard cut); the dissolve is the part whose weight
lies strictly between ``ALPHA_EDGE`` and ``1 - ALPHA_EDGE``.
"""

from __future__ import annotations

import numpy as np

THUMB_SIZE = (32, 18)  # (w, h) of the grey thumbnail of each frame (the midpoint test)
MIN_CHANGE = 10.0  # RMS levels the two pictures of a dissolve must differ by
MID_RESIDUAL = 0.2  # midpoint residual / the end pictures' difference (RMS) for a hit
SPAN_RESIDUAL = 0.6  # the same for every frame of a cluster's span
CHANGED_LEVEL = 12.0  # levels a thumbnail pixel must change by to count as changed
MIN_CHANGED_SHARE = 0.5  # share of the picture a dissolve changes (a title changes far less)
MAX_END_CORRELATION = 0.85  # end pictures more alike than this are one picture changing
MOTION_SHIFT = 4  # thumbnail pixels (each way) searched for a camera move between the ends
MOTION_CORRELATION = 0.8  # a shifted end this alike means the picture moved, not dissolved
ALPHA_EDGE = 0.08  # mix weight where a dissolve begins / ends
ALPHA_SLACK = 0.1  # how far the mix weight may go back from one frame to the next
MAX_ALPHA_STEP = 0.5  # a larger jump of the mix weight in one frame is a hard cut
CLUSTER_GAP = 2  # centres without a hit a cluster may bridge
DISSOLVE_MIN_FRAMES = 3


def half_widths(h_max: int) -> list[int]:
    """The half-widths tried by the midpoint test: 3 frames, growing by ~35 %, up to
    ``h_max``."""
    out: list[int] = []
    h = 3.0
    while round(h) < h_max:
        if round(h) not in out:
            out.append(round(h))
        h *= 1.35
    return [*out, max(3, h_max)]


def _best_shift(
    a: np.ndarray, b: np.ndarray, around: tuple[int, int], reach: int
) -> tuple[float, int, int]:
    """The shift (dy, dx) within ``reach`` of ``around`` that best maps picture ``a`` onto
    ``b`` (zero-mean correlation of the overlapping parts), with that correlation."""
    h, w = a.shape
    best = (-1.0, 0, 0)
    for dy in range(around[0] - reach, around[0] + reach + 1):
        for dx in range(around[1] - reach, around[1] + reach + 1):
            if abs(dy) >= h // 2 or abs(dx) >= w // 2:
                continue
            ca = a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            cb = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            za, zb = ca - ca.mean(), cb - cb.mean()
            norm = float(np.sqrt((za * za).sum() * (zb * zb).sum()))
            corr = float((za * zb).sum()) / norm if norm > 0 else -1.0
            if corr > best[0]:
                best = (corr, dy, dx)
    return best


def moved(thumbs: np.ndarray) -> bool:
    """Whether a span's last thumbnail is its first one moved (a pan or tilt, which the
    midpoint test can take for a mix when the picture is smooth). The move is followed in
    steps (first, quarter points, last: each step's best shift within ``MOTION_SHIFT``
    pixels), then the ends are compared at the summed shift: a camera move maps the first
    picture onto the last one (correlation at least ``MOTION_CORRELATION``), a dissolve does
    not (each step stays near shift 0 and the end pictures differ)."""
    w, h = THUMB_SIZE
    pics = [t.reshape(h, w) for t in thumbs]
    n = len(pics)
    marks = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
    total = (0, 0)
    for j in marks[1:]:
        _, dy, dx = _best_shift(pics[0], pics[j], total, MOTION_SHIFT)
        total = (dy, dx)
    corr, _, _ = _best_shift(pics[0], pics[-1], total, 1)
    return corr >= MOTION_CORRELATION


class FrameRing:
    """The last ``size`` frames' statistics (mean, std, thumbnail) by frame number."""

    def __init__(self, size: int) -> None:
        self.size = size
        w, h = THUMB_SIZE
        self.thumbs = np.zeros((size, w * h), np.float32)
        self.means = np.zeros(size, np.float64)
        self.stds = np.zeros(size, np.float64)

    def put(self, frame_no: int, mean: float, std: float, thumb: np.ndarray) -> None:
        """Store a frame's statistics (overwriting the frame ``size`` frames older)."""
        i = frame_no % self.size
        self.means[i], self.stds[i] = mean, std
        self.thumbs[i] = thumb.reshape(-1)

    def mean(self, frame_no: int) -> float:
        """The grey mean of a frame still in the ring."""
        return float(self.means[frame_no % self.size])

    def std(self, frame_no: int) -> float:
        """Its standard deviation."""
        return float(self.stds[frame_no % self.size])

    def thumb(self, frame_no: int) -> np.ndarray:
        """Its thumbnail (flat, float32)."""
        return self.thumbs[frame_no % self.size]


def distinct_pictures(ring: FrameRing, a: int, b: int, black_luma: float) -> bool:
    """Two end pictures of a possible dissolve: neither dark (a fade's business) and not
    one picture brightened or darkened (correlation of the zero-mean thumbnails)."""
    dark = 2 * black_luma
    if ring.mean(a) <= dark or ring.mean(b) <= dark:
        return False
    ta = ring.thumb(a) - ring.mean(a)
    tb = ring.thumb(b) - ring.mean(b)
    norm = float(np.linalg.norm(ta) * np.linalg.norm(tb))
    return norm > 0 and float(ta @ tb) / norm <= MAX_END_CORRELATION


def dissolve_span(
    ring: FrameRing, first: int, last: int, black_luma: float
) -> tuple[int, int] | None:
    """The dissolve inside ``first..last`` (pure pictures at both ends), or None when the
    frames are not a mix of the two end pictures."""
    if not distinct_pictures(ring, first, last, black_luma):
        return None
    frames = np.arange(first, last + 1)
    ta, tb = ring.thumb(first), ring.thumb(last)
    d = tb - ta
    dd = float(d @ d)
    if float(np.mean(np.abs(d) >= CHANGED_LEVEL)) < MIN_CHANGED_SHARE:
        return None  # a local change (a title fading in or out over the picture)
    if moved(ring.thumbs[frames % ring.size]):
        return None
    thumbs = ring.thumbs[frames % ring.size] - ta
    alpha = thumbs @ d / dd
    resid = np.sqrt(np.mean((thumbs - alpha[:, None] * d) ** 2, axis=1))
    if float(resid.max()) > SPAN_RESIDUAL * np.sqrt(dd / d.size):
        return None
    steps = np.diff(alpha)
    if float(steps.min()) < -ALPHA_SLACK or float(steps.max()) > MAX_ALPHA_STEP:
        return None
    inside = np.nonzero((alpha > ALPHA_EDGE) & (alpha < 1 - ALPHA_EDGE))[0]
    if len(inside) < DISSOLVE_MIN_FRAMES:
        return None
    return first + int(inside[0]), first + int(inside[-1])
