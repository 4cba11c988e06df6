"""Per-shot video clips: the contract's exactly-one rule and reading clips with PyAV.

Clips are real encodes from the film factory (MP4/H.264, WebM/VP9, MKV/MPEG-4) whose every frame
has its own brightness, so each sampled frame is checked against the frame at its position
decoded independently, and the positions against the client's sampling rule.
"""

from __future__ import annotations

import base64
from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from client.media.frames import sample_positions
from qwen_server.analysis.clips import ClipLimits, decode_clip
from qwen_server.contract.analysis import ShotIn
from qwen_server.errors import InvalidInput
from tests.clip_media import CLIP_FORMATS, b64_file, ramp_clip
from tests.payloads import image_b64

LIMITS = ClipLimits(
    max_bytes=16 << 20, max_seconds=30.0, max_pixels=4_000_000, keep_pixels=448 * 448
)


# --- contract --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"shot_id": 3}, "shot 3: send exactly one of images or video"),
        ({"shot_id": 3, "images": [image_b64()], "video": "AAAA"}, "shot 3: send exactly one"),
        ({"shot_id": 3, "images": [image_b64()], "frames_per_shot": 4}, "video only"),
        ({"shot_id": 3, "video": "AAAA", "frames_per_shot": 0}, "frames_per_shot"),
        ({"shot_id": 3, "video": "AAAA", "frames_per_shot": "5"}, "frames_per_shot"),
        ({"shot_id": 3, "video": ""}, "video"),
    ],
)
def test_shot_needs_exactly_one_frame_source(body: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        ShotIn.model_validate(body)
    assert needle in str(err.value)


def test_video_shot_is_valid_without_images() -> None:
    shot = ShotIn.model_validate({"shot_id": 1, "video": "AAAA", "frames_per_shot": 3})
    assert shot.images is None and shot.video == "AAAA" and shot.frames_per_shot == 3


# --- reading clips ---------------------------------------------------------------------------


def _all_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("suffix", sorted(CLIP_FORMATS))
@pytest.mark.parametrize("count", [1, 5, 8])
def test_clip_frames_are_the_client_rules_positions(tmp_path: Path, suffix: str, count: int):
    path = tmp_path / f"clip{suffix}"
    truth = ramp_clip(path, frames=30)
    images, info = decode_clip(b64_file(path), count=count, limits=LIMITS, where="shot 1 video")
    expected = sample_positions(0, truth.frame_count - 1, count)
    assert info.positions == expected and info.frame_count == truth.frame_count == 30
    assert info.seconds == pytest.approx(truth.duration)
    assert (info.width, info.height) == (160, 120)
    reference = _all_frames(path)
    assert all(
        np.array_equal(np.asarray(img), reference[p])
        for img, p in zip(images, expected, strict=True)
    )


def test_clip_shorter_than_the_count_gives_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    ramp_clip(path, frames=3)
    images, info = decode_clip(b64_file(path), count=5, limits=LIMITS, where="shot 1 video")
    assert len(images) == 3 and info.positions == [0, 1, 2]


def test_large_frames_are_shrunk_to_the_models_pixels(tmp_path: Path) -> None:
    path = tmp_path / "big.webm"
    ramp_clip(path, frames=4, size=(640, 480))
    limits = ClipLimits(16 << 20, 30.0, 4_000_000, keep_pixels=160 * 120)
    images, info = decode_clip(b64_file(path), count=2, limits=limits, where="shot 1 video")
    assert (info.width, info.height) == (640, 480)
    assert all(img.width * img.height <= 160 * 120 and img.mode == "RGB" for img in images)


def test_data_url_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    ramp_clip(path, frames=6)
    data = "data:video/mp4;base64," + b64_file(path)
    images, _ = decode_clip(data, count=2, limits=LIMITS, where="shot 1 video")
    assert len(images) == 2


def _cut_mp4(tmp_path: Path) -> Path:
    """An MP4 cut in half: its index (written last) is gone, PyAV cannot open it."""
    whole = tmp_path / "whole.mp4"
    ramp_clip(whole, frames=30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def test_refusals_name_the_shot_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    ramp_clip(path, frames=30)
    data = b64_file(path)
    size = path.stat().st_size
    cases = [
        (data, ClipLimits(size - 100, 30.0, 4_000_000, 448 * 448), "server.max_clip_mb"),
        (data, ClipLimits(16 << 20, 0.5, 4_000_000, 448 * 448), "server.max_clip_seconds"),
        (data, ClipLimits(16 << 20, 30.0, 100 * 100, 448 * 448), "server.max_image_pixels"),
        # 30 frames in 1.2 s is 25 fps: over 240 fps of a 0.1 s limit (25 frames) is refused
        # from the packet count already.
        (data, ClipLimits(16 << 20, 0.1, 4_000_000, 448 * 448), "more than 25 frames"),
        ("@@not base64@@", LIMITS, "not valid base64"),
        (
            base64.b64encode(np.random.default_rng(0).bytes(20_000)).decode(),
            LIMITS,
            "cannot be decoded",
        ),
        (base64.b64encode(path.read_bytes()[: size // 2]).decode(), LIMITS, "truncated"),
        (b64_file(_cut_mp4(tmp_path)), LIMITS, "cannot be decoded"),
    ]
    for clip, limits, needle in cases:
        with pytest.raises(InvalidInput) as err:
            decode_clip(clip, count=5, limits=limits, where="shot 7 video")
        assert needle in str(err.value) and "shot 7 video" in str(err.value), (needle, err.value)


def test_b_frames_and_an_audio_track_keep_the_frame_order(tmp_path: Path) -> None:
    """x264's defaults (B-frames: packets out of presentation order) plus a longer AAC track:
    frames are still numbered in presentation order, and the audio does not count as length."""
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 8 * i, np.uint8), "rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode())
        for k in range(int(1.3 * 44100 / 1024)):
            samples = av.AudioFrame.from_ndarray(
                np.zeros((1, 2048), np.float32), format="flt", layout="stereo"
            )
            samples.sample_rate, samples.pts = 44100, k * 1024
            out.mux(audio.encode(samples))
        out.mux(audio.encode())
    images, info = decode_clip(b64_file(path), count=5, limits=LIMITS, where="shot 1 video")
    assert info.frame_count == 30 and info.seconds == pytest.approx(1.2)
    assert info.positions == sample_positions(0, 29, 5)
    greys = [float(np.asarray(img).mean()) for img in images]
    assert greys == pytest.approx([8 * p for p in info.positions], abs=2)
