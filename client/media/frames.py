"""Cheap per-frame conversion for detection and the bounded choice of each shot's samples.

Speed: every decoded frame needs a small BGR picture for the detector. It is made straight from
the decoder's YUV 4:2:0 planes (zero-copy numpy views), shrunk by an integer factor with
OpenCV's bilinear filter (what PySceneDetect's own downscaling uses; swscale to RGB at full size
or an area filter costs several times more at 1080p; at an odd factor the filter only reads
one pixel per output pixel, see ``shrink_plane``), then converted to BGR at the small size
with OpenCV's BT.601 matrix (the small hue shift on BT.709 sources does not matter here).

Sample candidates cost nothing while decoding: the reservoir keeps *references* to decoded
frames (FFmpeg's refcounted buffers), and only the few frames finally picked are converted and
resized with swscale (area filter, the source's own colour matrix) when their shot closes, still
in the decode thread (so decoder buffers are released at points fixed by the decode pass, see
``video.ShotScanner._detach``), then JPEG-encoded in worker threads.

Memory: a shot's length is unknown until its cut is seen, and the video is never read twice, so
``ShotReservoir`` keeps at most ``capacity`` candidate frames of the open shot: it takes every
frame, and whenever it holds more than ``capacity`` it drops every other candidate and takes
frames half as often (stride doubling). The candidates thus always cover the whole shot evenly,
every ``stride`` frames with ``stride < 2 * length / capacity``; at the cut the frames nearest
to ``sample_positions`` are picked, each at most ``stride / 2`` frames from its ideal position
(exact for shots up to ``capacity`` frames). ``candidate_capacity`` sizes ``capacity`` so the
held frames stay within a memory budget (about 120 MiB; 40 frames at 1080p, 10 at 4K), so the
memory per open shot is bounded whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import cv2
import numpy as np

_YUV420 = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class Candidate:
    """A decoded frame kept as a possible sample of the open shot."""

    frame_no: int
    frame: Any  # av.VideoFrame (kept by reference: no conversion until it is picked)


def frame_bytes(width: int, height: int) -> int:
    """Memory of one decoded 4:2:0 8-bit frame."""
    return width * height * 3 // 2


def candidate_capacity(width: int, height: int, wanted: int, count: int, budget: int) -> int:
    """Candidates kept per open shot: ``wanted``, fewer if they would exceed ``budget`` bytes,
    never fewer than ``2 * count`` (needed to spread ``count`` samples)."""
    return max(2 * count, min(wanted, budget // max(1, frame_bytes(width, height))))


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
        self._cands: list[Candidate] = []

    def reset(self, start_frame: int) -> None:
        """Begin a new shot at ``start_frame`` (the previous one must have been picked)."""
        self.start_frame = start_frame
        self._stride = 1
        self._next = start_frame
        self._cands = []

    def clone(self) -> ShotReservoir:
        """An independent copy that can go on taking frames (the candidates are shared
        references, so a copy costs no frame memory until the two diverge)."""
        copy = ShotReservoir(self.capacity, self.count)
        copy.start_frame = self.start_frame
        copy._stride = self._stride
        copy._next = self._next
        copy._cands = list(self._cands)
        return copy

    @property
    def stride(self) -> int:
        """Current distance in frames between kept candidates."""
        return self._stride

    def wants(self, frame_no: int) -> bool:
        """Whether the frame should become a candidate."""
        return frame_no >= self._next

    def add(self, candidate: Candidate) -> None:
        """Keep a candidate frame, thinning the candidates when over capacity."""
        self._cands.append(candidate)
        self._next = candidate.frame_no + self._stride
        if len(self._cands) > self.capacity:
            self._cands = self._cands[::2]
            self._stride *= 2
            self._next = self._cands[-1].frame_no + self._stride

    def pick(self, end_frame: int, within: tuple[int, int] | None = None) -> list[Candidate]:
        """The sample frames of the shot that ends at ``end_frame`` (in time order); with
        ``within`` (first, last), spread over those frames only (a shot's frames outside its
        transitions), unless fewer than ``count`` candidates lie there."""
        usable = [c for c in self._cands if c.frame_no <= end_frame]
        first = self.start_frame
        if within is not None:
            inner = [c for c in usable if within[0] <= c.frame_no <= within[1]]
            if len(inner) >= self.count:
                usable, first, end_frame = inner, within[0], within[1]
        targets = sample_positions(first, end_frame, self.count)
        frames = pick_nearest([c.frame_no for c in usable], targets)
        by_no = {c.frame_no: c for c in usable}
        return [by_no[f] for f in frames]

    def __len__(self) -> int:
        return len(self._cands)


class FrameConverter:
    """Turns decoded frames into the detector's small BGR picture."""

    def __init__(self, width: int, height: int, detect_width: int) -> None:
        self.width = width
        self.height = height
        # An integer shrink factor: the detection width lands in [detect_width, 2*detect_width).
        self.detect_factor = max(1, width // detect_width)

    def planes(self, frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zero-copy views of the Y, U and V planes (other pixel formats are converted)."""
        if frame.format.name not in _YUV420:
            frame = frame.reformat(format="yuv420p")
        out = []
        for plane in frame.planes:
            h, w, stride = plane.height, plane.width, plane.line_size
            # A plane exposes the buffer protocol (PyAV's stubs do not say so).
            buf = np.frombuffer(plane, np.uint8, count=stride * h)  # type: ignore[call-overload]
            arr = buf.reshape(h, stride)[:, :w]
            out.append(arr)
        return out[0], out[1], out[2]

    def detection_frame(self, frame: av.VideoFrame) -> np.ndarray:
        """Small BGR picture for the scene detector (see ``shrink_plane`` for the filter)."""
        y, u, v = self.planes(frame)
        factor = self.detect_factor
        # Even output sizes keep 4:2:0 chroma aligned; the source is cropped to a whole number of
        # factor-sized cells (at most a few pixels) so every output pixel covers the same area.
        h = max(2, (y.shape[0] // (2 * factor)) * 2)
        w = max(2, (y.shape[1] // (2 * factor)) * 2)
        # One planar I420 picture (Y, then U, then V) written in place and converted in one
        # call: the same BT.601 result as the former NV12 path without building the
        # interleaved chroma plane.
        yuv = np.empty((h * 3 // 2, w), np.uint8)
        flat = yuv.reshape(-1)
        quarter = (h // 2) * (w // 2)
        yuv[:h] = shrink_plane(y, h, w, factor)
        chroma = flat[h * w :]
        chroma[:quarter].reshape(h // 2, w // 2)[:] = shrink_plane(u, h // 2, w // 2, factor)
        chroma[quarter:].reshape(h // 2, w // 2)[:] = shrink_plane(v, h // 2, w // 2, factor)
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)


def shrink_plane(plane: np.ndarray, h: int, w: int, factor: int) -> np.ndarray:
    """``plane`` shrunk by an integer ``factor`` to (h, w): exactly OpenCV's bilinear
    ``cv2.resize`` of its top-left ``h * factor`` x ``w * factor`` pixels (what the detector was
    tuned on, and what PySceneDetect's own downscaling uses).

    For an odd factor bilinear sampling lands on the centre pixel of each factor x factor cell
    with weight 1 (source coordinate ``(x + 0.5) * factor - 0.5``), so the result is a strided
    view of the plane: no pixel but those is read, which at 1080p halves the cost per frame. An
    even factor (SD sources) averages the 2 x 2 pixels around each cell's centre and is left to
    OpenCV. ``tests/unit/test_client_frames.py`` checks the equality for every factor.
    """
    if factor == 1:
        return plane[:h, :w]
    if factor % 2 and plane.shape[0] >= h * factor and plane.shape[1] >= w * factor:
        first = factor // 2
        return plane[first : h * factor : factor, first : w * factor : factor]
    return cv2.resize(plane[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_LINEAR)


def encode_jpeg(frame: av.VideoFrame, size: tuple[int, int], quality: int) -> bytes:
    """A decoded frame resized to ``size`` (w, h) and JPEG-encoded (runs off the decode thread)."""
    bgr = frame.reformat(width=size[0], height=size[1], format="bgr24", interpolation="AREA")
    ok, buf = cv2.imencode(".jpg", bgr.to_ndarray(), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
