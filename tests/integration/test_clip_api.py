"""Per-shot ``video`` clips through the real server on loopback (tiny real model).

Clips are real encodes (MP4/H.264, WebM/VP9, MKV/MPEG-4) from the film factory; the server
samples their frames with the client's rule and says so in each result's ``inputs`` block.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from client.media.frames import sample_positions
from tests.clip_media import CLIP_FORMATS, b64_file, ramp_clip
from tests.conftest import LiveServer
from tests.payloads import audio_features, image_b64, shot


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Suffix -> base64 of a 30-frame clip (1.2 s at 25 fps) in that container."""
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for suffix in CLIP_FORMATS:
        ramp_clip(folder / f"clip{suffix}", frames=30)
        out[suffix] = b64_file(folder / f"clip{suffix}")
    return out


def test_analyze_accepts_a_clip_instead_of_images(server: LiveServer, clips) -> None:
    body = {"shot_id": 4, "video": clips[".mp4"], "audio_features": audio_features()}
    with server.client() as c:
        r = c.post("/analyze", json={**body, "start_time": 10.0, "end_time": 11.2})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["shot_id"] == 4 and res["duration"] == pytest.approx(1.2)
    assert res["inputs"]["source"] == "video" and res["inputs"]["frames"] == 5
    clip = res["inputs"]["clip"]
    assert clip["codec"] == "h264" and clip["frame_count"] == 30
    assert clip["positions"] == sample_positions(0, 29, 5)
    # A grey ramp: the measured luminance is the mean of the sampled greys, mid-range.
    assert 0.2 < res["measured"]["luminance"] < 0.8


def test_batch_mixes_images_and_clips_in_every_container(server: LiveServer, clips) -> None:
    shots = [shot(0, n_frames=2)]
    for i, suffix in enumerate(sorted(clips), start=1):
        shots.append({"shot_id": i, "video": clips[suffix], "frames_per_shot": 2 + i})
    with server.client() as c:
        r = c.post("/analyze_batch", json={"session_id": "clips-film", "shots": shots})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["shot_id"] for x in results] == [0, 1, 2, 3]
    assert results[0]["inputs"] == {"source": "images", "frames": 2, "clip": None}
    for res, suffix in zip(results[1:], sorted(clips), strict=True):
        count = 2 + res["shot_id"]
        assert res["inputs"]["source"] == "video" and res["inputs"]["frames"] == count
        assert res["inputs"]["clip"]["positions"] == sample_positions(0, 29, count), suffix
    with server.client() as c:
        stored = c.get("/sessions/clips-film").json()
    # The stored results keep the flag: a reader of the session knows frames came from clips.
    assert [s["inputs"]["source"] for s in stored["shots"]] == ["images", "video", "video", "video"]


def _garbage() -> str:
    return base64.b64encode(np.random.default_rng(3).bytes(30_000)).decode()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("both", "shot 5: send exactly one of images or video"),
        ("neither", "shot 5: send exactly one of images or video"),
        ("garbage", "shot 5 video: clip cannot be decoded"),
        ("not-base64", "shot 5 video: not valid base64"),
        ("too-many-frames", "shot 5: frames_per_shot 9 > 8 (server.max_images_per_shot)"),
        ("frames-with-images", "shot 5: frames_per_shot applies to video only"),
    ],
)
def test_bad_clips_are_422_naming_the_shot(server: LiveServer, clips, case: str, needle: str):
    good = {"shot_id": 1, "images": [image_b64()]}
    bad: dict = {
        "both": {"shot_id": 5, "images": [image_b64()], "video": clips[".webm"]},
        "neither": {"shot_id": 5},
        "garbage": {"shot_id": 5, "video": _garbage()},
        "not-base64": {"shot_id": 5, "video": "@@@@"},
        "too-many-frames": {"shot_id": 5, "video": clips[".mkv"], "frames_per_shot": 9},
        "frames-with-images": {"shot_id": 5, "images": [image_b64()], "frames_per_shot": 3},
    }[case]
    with server.client() as c:
        r = c.post("/analyze_batch", json={"shots": [good, bad]})
        assert r.status_code == 422, r.text
        assert needle in r.text and len(r.content) < 20_000
        assert c.post("/analyze", json=bad).status_code == 422
        assert c.post("/analyze", json=good).status_code == 200  # still serving


def test_clip_limits_are_the_configured_ones(server_factory, clips, tmp_path: Path) -> None:
    long_path = tmp_path / "long.webm"
    ramp_clip(long_path, frames=60)  # 2.4 s
    small = {"shot_id": 2, "video": clips[".webm"]}  # 1.2 s, a couple of KB
    limits = {"max_clip_seconds": 2.0, "max_clip_mb": 0.003}  # 3,145 bytes: the MP4 is ~4 KB
    with server_factory(server=limits) as live, live.client() as c:
        over_long = c.post("/analyze", json={"shot_id": 6, "video": b64_file(long_path)})
        over_size = c.post("/analyze", json={"shot_id": 7, "video": clips[".mp4"]})
        fine = c.post("/analyze", json=small)
    assert over_long.status_code == 422, over_long.text
    assert "shot 6 video: clip is 2.40 s long" in over_long.text
    assert "server.max_clip_seconds" in over_long.text
    assert over_size.status_code == 422 and "shot 7 video" in over_size.text
    assert "server.max_clip_mb" in over_size.text
    assert fine.status_code == 200, fine.text
    assert fine.json()["inputs"]["clip"]["frame_count"] == 30
