"""Frame sampling positions, the bounded candidate reservoir and the cheap frame conversions."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from client.media.frames import (
    Candidate,
    FrameConverter,
    ShotReservoir,
    candidate_capacity,
    encode_jpeg,
    output_size,
    pick_nearest,
    sample_positions,
    shrink_plane,
)


def _fake_capture(frame_no: int) -> Candidate:
    return Candidate(frame_no=frame_no, frame=None)


@pytest.mark.parametrize("length", [7, 10, 57, 100, 1000, 123457])
def test_sample_positions_are_evenly_spaced_inside_the_shot(length: int) -> None:
    start = 500
    end = start + length - 1
    pos = sample_positions(start, end, 5)
    assert len(pos) == 5 and pos == sorted(set(pos))
    assert start < pos[0] and pos[-1] < end  # boundary frames are never sampled
    gaps = np.diff(pos)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced (up to rounding)
    # Centred: the margins before the first and after the last sample are about half a gap.
    assert abs((pos[0] - start) - (end - pos[-1])) <= 2


def test_short_shots_give_the_frames_they_have() -> None:
    assert sample_positions(10, 12, 5) == [10, 11, 12]
    assert sample_positions(10, 10, 5) == [10]
    assert sample_positions(0, 4, 5) == [0, 1, 2, 3, 4]
    # One frame more than asked: not enough room to skip both boundaries, still 5 distinct.
    assert len(set(sample_positions(0, 5, 5))) == 5


def test_pick_nearest_is_unique_and_prefers_the_closest() -> None:
    assert pick_nearest([0, 4, 8, 12], [5, 6]) == [4, 8]
    assert pick_nearest([0, 2], [1, 1, 1]) == [0, 2]  # fewer candidates than targets


@pytest.mark.parametrize("length", [3, 40, 41, 97, 400, 5000])
def test_reservoir_stays_bounded_and_picks_near_ideal_positions(length: int) -> None:
    capacity, count, start = 40, 5, 1000
    res = ShotReservoir(capacity, count)
    res.reset(start)
    captured = 0
    for f in range(start, start + length):
        if res.wants(f):
            res.add(_fake_capture(f))
            captured += 1
        assert len(res._cands) <= capacity
    picked = [c.frame_no for c in res.pick(start + length - 1)]
    ideal = sample_positions(start, start + length - 1, count)
    assert len(picked) == min(count, length)
    if length <= capacity:
        assert picked == ideal  # every frame was a candidate
    else:
        # Candidates are `stride` apart, stride < 2 * length / capacity: error <= stride / 2.
        assert res.stride < 2 * length / capacity
        assert all(abs(p - i) <= res.stride / 2 for p, i in zip(picked, ideal, strict=True))
    # Only a fraction of a long shot's frames ever become candidates.
    if length >= 400:
        assert captured < length / 2


def test_reservoir_ignores_candidates_after_the_shot_end() -> None:
    res = ShotReservoir(10, 2)
    res.reset(0)
    for f in range(12):
        if res.wants(f):
            res.add(_fake_capture(f))
    assert all(c.frame_no <= 5 for c in res.pick(5))


def test_output_size_snaps_to_the_patch_grid() -> None:
    assert output_size(848, 480, 448, 28) == (448, 252)
    assert output_size(1920, 1080, 448, 28) == (448, 252)
    assert output_size(480, 848, 448, 28) == (252, 448)  # portrait
    w, h = output_size(320, 240, 448, 28)  # never upscaled beyond snapping
    assert (w % 28, h % 28) == (0, 0) and w <= 336 and h <= 252


def _yuv_frame(rgb: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def test_converter_shrinks_by_integer_factors_and_keeps_colours() -> None:
    rgb = np.zeros((1080, 1920, 3), np.uint8)
    rgb[:, :960] = (200, 30, 30)  # left half red, right half dark blue
    rgb[:, 960:] = (10, 10, 90)
    frame = _yuv_frame(rgb)
    conv = FrameConverter(1920, 1080, detect_width=256)
    det = conv.detection_frame(frame)
    assert det.shape[2] == 3 and 256 <= det.shape[1] < 512
    b, g, r = det[det.shape[0] // 2, det.shape[1] // 4]
    assert r > 150 and g < 80 and b < 80
    jpeg = encode_jpeg(frame, (448, 252), 90)
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (448, 252)
    left = np.asarray(img.convert("RGB"))[126, 50]
    right = np.asarray(img.convert("RGB"))[126, 400]
    assert left[0] > 150 and right[2] > right[0]


def test_candidate_memory_is_budgeted() -> None:
    budget = 128 << 20
    assert candidate_capacity(1920, 1080, 40, 5, budget) == 40
    assert candidate_capacity(3840, 2160, 40, 5, budget) == 10  # never below 2 x samples
    assert candidate_capacity(848, 480, 40, 5, budget) == 40


def test_converter_handles_odd_sizes_and_other_pixel_formats() -> None:
    rgb = np.full((121, 161, 3), 128, np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")  # not yuv420p: converted first
    conv = FrameConverter(161, 121, detect_width=256)
    det = conv.detection_frame(frame)
    assert det.shape[0] % 2 == 0 and det.shape[1] % 2 == 0
    assert abs(int(det.mean()) - 128) < 8


def _opencv_detection_frame(frame: av.VideoFrame, factor: int) -> np.ndarray:
    """The detection picture as it was first defined: each plane shrunk by ``cv2.resize``
    (bilinear), chroma interleaved, OpenCV's NV12 conversion."""
    y, u, v = (
        np.frombuffer(p, np.uint8, count=p.line_size * p.height).reshape(p.height, p.line_size)[
            :, : p.width
        ]
        for p in frame.planes
    )
    h = max(2, (y.shape[0] // (2 * factor)) * 2)
    w = max(2, (y.shape[1] // (2 * factor)) * 2)

    def shrink(plane: np.ndarray, ph: int, pw: int) -> np.ndarray:
        crop = plane[: ph * factor, : pw * factor]
        if factor == 1:
            return np.ascontiguousarray(crop)
        return cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_LINEAR)

    uv = cv2.merge([shrink(u, h // 2, w // 2), shrink(v, h // 2, w // 2)])
    return cv2.cvtColorTwoPlane(shrink(y, h, w), uv, cv2.COLOR_YUV2BGR_NV12)


@pytest.mark.parametrize("factor", range(1, 10))
@pytest.mark.parametrize("size", [(1080, 1920), (119, 333), (2160, 3840), (576, 720)])
def test_shrink_plane_is_exactly_opencvs_bilinear_resize(
    factor: int, size: tuple[int, int]
) -> None:
    rows, cols = size
    # A padded plane (line size above the width), as decoders hand them out.
    plane = np.random.default_rng(factor).integers(0, 256, (rows, cols + 40), np.uint8)[:, :cols]
    h, w = rows // factor, cols // factor
    expected = cv2.resize(plane[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(shrink_plane(plane, h, w, factor), expected)


@pytest.mark.parametrize(
    ("width", "height"), [(1920, 1080), (1280, 720), (720, 576), (161, 121), (3840, 2160)]
)
def test_detection_frame_is_the_opencv_nv12_picture(width: int, height: int) -> None:
    rgb = np.random.default_rng(width).integers(0, 256, (height, width, 3), np.uint8)
    frame = _yuv_frame(rgb)
    conv = FrameConverter(width, height, detect_width=256)
    expected = _opencv_detection_frame(frame, conv.detect_factor)
    assert np.array_equal(conv.detection_frame(frame), expected)
