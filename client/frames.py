"""Cheap per-frame conversions and the bounded choice of each shot's sample frames.

Speed: every decoded frame needs a small BGR picture for the detector, and some frames become
sample candidates. Both are made straight from the decoder's YUV 4:2:0 planes (zero-copy numpy
views) with OpenCV's INTER_AREA at an *integer* shrink factor, which has a fast path (a
non-integer factor, or swscale to RGB at full size, costs several times more at 1080p), then
converted to BGR at the small size. Colour conversion uses OpenCV's BT.601 limited-range matrix
whatever the source matrix; the tiny hue shift on BT.709 sources does not matter for detection
or captions.

Memory: a shot's length is unknown until its cut is seen, and the video is never read twice, so
``ShotReservoir`` keeps at most ``capacity`` candidate frames of the open shot: it takes every
frame, and whenever it holds more than ``capacity`` it drops every other candidate and takes
frames half as often (stride doubling). The candidates thus always cover the whole shot evenly,
every ``stride`` frames with ``stride < 2 * length / capacity``; at the cut the frames nearest
to ``sample_positions`` are picked, each at most ``stride / 2`` frames from its ideal position
(exact for shots up to ``capacity`` frames). Candidates are stored shrunk to about the output
size, so the memory per open shot is bounded by ``capacity`` small pictures whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np

_YUV420 = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class Capture:
    """A frame kept as a sample candidate: shrunk NV12 planes (Y, and interleaved U/V)."""

    frame_no: int
    y: np.ndarray
    uv: np.ndarray

    @property
    def nbytes(self) -> int:
        """Memory held by the pixels."""
        return int(self.y.nbytes + self.uv.nbytes)

    def to_bgr(self) -> np.ndarray:
        """The captured frame as a BGR picture at its capture size."""
        return cv2.cvtColorTwoPlane(self.y, self.uv, cv2.COLOR_YUV2BGR_NV12)


def output_size(width: int, height: int, max_side: int, snap: int) -> tuple[int, int]:
    """Size of the sent JPEGs: longest side ``max_side`` (never upscaled), both sides snapped to
    the nearest multiple of ``snap`` (Qwen2-VL works on a 28-pixel patch grid and would resample
    to such a size itself, so snapping here avoids a second resampling on the server)."""
    scale = min(1.0, max_side / max(width, height))

    def _snap(v: float) -> int:
        return max(snap, int(round(v / snap)) * snap)

    return _snap(width * scale), _snap(height * scale)


def sample_positions(start: int, end: int, count: int) -> list[int]:
    """Ideal frame numbers of ``count`` samples of the shot ``start..end`` (inclusive).

    The samples sit at the centres of ``count`` equal parts of the shot, after dropping its
    first and last frames when the shot is long enough (boundary frames can carry the cut's
    encoding smear or a flash). A shot shorter than ``count`` gives all its frames.
    """
    length = end - start + 1
    if length <= count:
        return list(range(start, end + 1))
    lo, span = (start + 1, length - 2) if length >= count + 2 else (start, length)
    return [lo + int((k + 0.5) * span / count) for k in range(count)]


def pick_nearest(candidates: list[int], targets: list[int]) -> list[int]:
    """For each target the nearest candidate not already taken (ties: the earlier frame).

    Returns sorted unique frame numbers; fewer than ``len(targets)`` only when there are fewer
    candidates.
    """
    chosen: set[int] = set()
    for t in targets:
        best = None
        for c in candidates:
            if c in chosen:
                continue
            if best is None or abs(c - t) < abs(best - t):
                best = c
        if best is not None:
            chosen.add(best)
    return sorted(chosen)


class ShotReservoir:
    """Bounded, evenly spread candidate frames of the shot being decoded (see module doc)."""

    def __init__(self, capacity: int, count: int) -> None:
        if capacity < 2 * count:
            raise ValueError("capacity must be at least twice the sample count")
        self.capacity = capacity
        self.count = count
        self.start_frame = 0
        self._stride = 1
        self._next = 0
        self._cands: list[Capture] = []

    def reset(self, start_frame: int) -> None:
        """Begin a new shot at ``start_frame`` (the previous one must have been picked)."""
        self.start_frame = start_frame
        self._stride = 1
        self._next = start_frame
        self._cands = []

    @property
    def stride(self) -> int:
        """Current distance in frames between kept candidates."""
        return self._stride

    def wants(self, frame_no: int) -> bool:
        """Whether the frame should be captured (so the caller converts only those)."""
        return frame_no >= self._next

    def add(self, capture: Capture) -> None:
        """Keep a captured frame, thinning the candidates when over capacity."""
        self._cands.append(capture)
        self._next = capture.frame_no + self._stride
        if len(self._cands) > self.capacity:
            self._cands = self._cands[::2]
            self._stride *= 2
            self._next = self._cands[-1].frame_no + self._stride

    def pick(self, end_frame: int) -> list[Capture]:
        """The sample frames of the shot that ends at ``end_frame`` (in time order)."""
        usable = [c for c in self._cands if c.frame_no <= end_frame]
        targets = sample_positions(self.start_frame, end_frame, self.count)
        frames = pick_nearest([c.frame_no for c in usable], targets)
        by_no = {c.frame_no: c for c in usable}
        return [by_no[f] for f in frames]

    @property
    def nbytes(self) -> int:
        """Memory held by the candidates."""
        return sum(c.nbytes for c in self._cands)


class FrameConverter:
    """Turns decoded frames into the detector's small BGR picture and into sample captures."""

    def __init__(self, width: int, height: int, detect_width: int, capture_side: int) -> None:
        self.width = width
        self.height = height
        # Integer shrink factors: the detection width lands in [detect_width, 2*detect_width),
        # the capture in [capture_side, 2*capture_side) on the longest side.
        self.detect_factor = max(1, width // detect_width)
        self.capture_factor = max(1, max(width, height) // capture_side)

    def planes(self, frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zero-copy views of the Y, U and V planes (other pixel formats are converted)."""
        if frame.format.name not in _YUV420:
            frame = frame.reformat(format="yuv420p")
        out = []
        for plane in frame.planes:
            h, w, stride = plane.height, plane.width, plane.line_size
            arr = np.frombuffer(plane, np.uint8, count=stride * h).reshape(h, stride)[:, :w]
            out.append(arr)
        return out[0], out[1], out[2]

    @staticmethod
    def _shrink(
        y: np.ndarray, u: np.ndarray, v: np.ndarray, factor: int
    ) -> tuple[np.ndarray, np.ndarray]:
        # Even output sizes keep 4:2:0 chroma aligned; the source is cropped to a whole number of
        # factor-sized cells (at most a few pixels), which keeps INTER_AREA on its fast path.
        h = (y.shape[0] // (2 * factor)) * 2
        w = (y.shape[1] // (2 * factor)) * 2
        h, w = max(h, 2), max(w, 2)
        if factor == 1:
            ys = np.ascontiguousarray(y[:h, :w])
            us = u[: h // 2, : w // 2]
            vs = v[: h // 2, : w // 2]
        else:
            ys = cv2.resize(y[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)
            ch, cw = (h // 2) * factor, (w // 2) * factor
            us = cv2.resize(u[:ch, :cw], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            vs = cv2.resize(v[:ch, :cw], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        return ys, cv2.merge([us, vs])

    def detection_frame(self, frame: av.VideoFrame) -> np.ndarray:
        """Small BGR picture for the scene detector."""
        ys, uv = self._shrink(*self.planes(frame), self.detect_factor)
        return cv2.cvtColorTwoPlane(ys, uv, cv2.COLOR_YUV2BGR_NV12)

    def capture(self, frame: av.VideoFrame, frame_no: int) -> Capture:
        """A sample candidate: the frame shrunk to about the output size, kept as NV12."""
        ys, uv = self._shrink(*self.planes(frame), self.capture_factor)
        return Capture(frame_no=frame_no, y=ys, uv=uv)


def encode_jpeg(capture: Capture, size: tuple[int, int], quality: int) -> bytes:
    """The capture resized to ``size`` (w, h) and JPEG-encoded (runs off the decode thread)."""
    bgr = capture.to_bgr()
    if (bgr.shape[1], bgr.shape[0]) != size:
        interp = cv2.INTER_AREA if size[0] < bgr.shape[1] else cv2.INTER_CUBIC
        bgr = cv2.resize(bgr, size, interpolation=interp)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
