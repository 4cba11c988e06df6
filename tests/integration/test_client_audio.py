"""Audio decoded in-process (many codecs/containers), aligned per shot, bounded in memory."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from client.media.audio import AudioTrack
from client.media.probe import probe
from client.options import AudioOptions, ExtractOptions
from client.pipeline.source import ShotSource
from tests.film_factory import FilmTruth, ShotSpec, make_film, standard_shots


def _finite(feats: dict) -> bool:
    flat = [x for v in feats.values() if v is not None for x in (v if isinstance(v, list) else [v])]
    return all(math.isfinite(x) for x in flat)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("audio") / "standard.mp4", standard_shots())


def _features(path: Path) -> list[dict | None]:
    return [p.audio_features for p in ShotSource(probe(path), ExtractOptions())]


def test_per_shot_features_match_what_each_shot_plays(film: FilmTruth) -> None:
    feats = _features(film.path)
    assert len(feats) == len(film.shots)
    kinds = [s.audio for s in film.shots]
    assert all(f is not None and _finite(f) for f in feats)
    silent = [f for f, k in zip(feats, kinds, strict=True) if k == "silence"]
    tones = [(f, s) for f, s in zip(feats, film.shots, strict=True) if s.audio == "tone"]
    noisy = [f for f, k in zip(feats, kinds, strict=True) if k == "noise"]
    for f in silent:
        assert f["rms_energy_mean"] < 1e-3 and f["tempo"] is None
    for f, spec in tones:
        assert abs(f["spectral_centroid_mean"] - spec.tone_hz) < 0.15 * spec.tone_hz
        assert f["rms_energy_mean"] > 0.1
    assert min(f["zero_crossing_rate_mean"] for f in noisy) > max(
        f["zero_crossing_rate_mean"] for f, _ in tones
    )


@pytest.mark.parametrize(
    ("suffix", "video", "audio", "rate"),
    [
        ("mkv", "libx264", "libopus", 48000),
        ("webm", "libvpx-vp9", "libopus", 48000),
        ("mkv", "libx264", "vorbis", 44100),
        ("mkv", "libx264", "flac", 44100),
        ("mkv", "libx264", "libmp3lame", 44100),
        ("mov", "libx264", "aac", 32000),
    ],
)
def test_codecs_and_containers(
    tmp_path: Path, suffix: str, video: str, audio: str, rate: int
) -> None:
    specs = [
        ShotSpec(frames=40, brightness=0.8, audio="tone", tone_hz=660.0),
        ShotSpec(frames=40, brightness=0.2, pattern="circles", audio="silence"),
    ]
    truth = make_film(
        tmp_path / f"f.{suffix}",
        specs,
        size=(160, 96),
        video_codec=video,
        audio_codec=audio,
        sample_rate=rate,
    )
    info = probe(truth.path)
    assert info.has_audio
    feats = _features(truth.path)
    assert len(feats) == 2 and all(f is not None and _finite(f) for f in feats)
    assert abs(feats[0]["spectral_centroid_mean"] - 660.0) < 100
    assert feats[1]["rms_energy_mean"] < 0.01 < feats[0]["rms_energy_mean"]


def _write_tone_flac(path: Path, seconds: int, sr: int = 16000) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("flac", rate=sr)
        s.layout, s.format = "mono", "s16"
        t = np.arange(seconds * sr) / sr
        pcm = (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16)
        for i in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 4096], format="s16", layout="mono")
            frame.sample_rate = sr
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def test_audio_track_is_paced_by_the_video_and_releases_memory(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    _write_tone_flac(path, 60)
    track = AudioTrack(path, AudioOptions(sample_rate=8000, lookahead_seconds=5.0)).start()
    try:
        track.advance_video(10.0)
        piece = track.slice(9.0, 10.0)  # waits until decoded
        assert len(piece) == 8000 and np.abs(piece).max() > 0.2
        # Decoding stops about lookahead seconds past the video position.
        waited = threading.Event()
        waited.wait(0.5)
        assert track.held_seconds <= 10.0 + 5.0 + 2.0
        track.release_before(8.0)
        assert track.held_seconds <= 10.0
        assert np.all(track.slice(1.0, 2.0) == 0)  # released: silence, never stale data
        track.release_between(9.5, 12.5)  # drops the whole one-second blocks [10, 12) only
        assert np.all(track.slice(10.0, 12.0) == 0)
        assert np.abs(track.slice(9.0, 10.0)).max() > 0.2 < np.abs(track.slice(12.0, 13.0)).max()
        track.advance_video(math.inf)
        end = track.slice(59.0, 61.0)  # past the end: zero-padded
        assert len(end) == 16000 and np.abs(end[:8000]).max() > 0.2 and not end[-100:].any()
    finally:
        track.close()


def test_a_very_long_shot_does_not_hold_all_its_audio(tmp_path: Path) -> None:
    truth = make_film(
        tmp_path / "long.mp4", [ShotSpec(frames=25 * 40, audio="tone")], size=(64, 48)
    )
    options = ExtractOptions(audio=AudioOptions(max_window_seconds=4.0, lookahead_seconds=2.0))
    held: list[float] = []

    class Watched(ShotSource):
        def _on_frame(self, frame_no: int, stream_time: float) -> None:
            super()._on_frame(frame_no, stream_time)
            if frame_no % 25 == 0 and self._audio is not None:
                held.append(self._audio.held_seconds)

    prepared = list(Watched(probe(truth.path), options))
    assert len(prepared) == 1 and prepared[0].audio_features["rms_energy_mean"] > 0.1
    # Window (4 s) + lookahead (2 s) + the recent 2 s + release granularity, not 40 s.
    assert max(held) <= 4 + 2 + 2 + 5 + 2
