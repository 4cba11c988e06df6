"""Speech, music, beats and loudness of real recordings through the client's own decode path
(issue 15): speech is high in speech and low in music and whale song, and every shot of a run
carries the new fields (or says why not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.media.features import shot_audio_features
from client.media.probe import probe
from client.options import AudioOptions, ExtractOptions
from client.pipeline.source import ShotSource
from qwen_server.contract.analysis import AudioFeatures
from tests.audio_media import decode_audio
from tests.film_factory import FilmTruth, make_film, standard_shots

SR = AudioOptions().sample_rate
RECORDINGS = {
    "speech": "speech_jfk_11s.flac",
    "music": "music_vibe_ace.ogg",
    "ambience": "ambience_humpback.ogg",
}


@pytest.fixture(scope="module")
def cues(shared_media: Path) -> dict[str, dict]:
    out = {}
    for kind, name in RECORDINGS.items():
        feats, error = shot_audio_features(decode_audio(shared_media / name, SR), SR, 2.0)
        assert error is None
        AudioFeatures.model_validate(feats)  # the server accepts every field
        out[kind] = feats
    return out


def test_speech_ratio_is_high_for_speech_and_low_otherwise(cues: dict[str, dict]) -> None:
    assert cues["speech"]["speech_ratio"] > 0.5
    assert cues["music"]["speech_ratio"] < 0.15
    assert cues["ambience"]["speech_ratio"] < 0.15
    assert len(cues["speech"]["speech_segments"]) >= 2


def test_music_ratio_is_high_for_music_and_low_for_speech(cues: dict[str, dict]) -> None:
    assert cues["music"]["music_ratio"] > 0.7
    assert cues["speech"]["music_ratio"] < 0.3
    assert cues["music"]["music_ratio"] > cues["speech"]["music_ratio"] + 0.4


def test_beats_and_loudness_of_the_recordings(cues: dict[str, dict]) -> None:
    music = cues["music"]
    assert music["tempo"] is not None and 60 <= music["tempo"] <= 200
    beats = music["beat_times"]
    assert len(beats) > 60 and all(0 <= a < b for a, b in zip(beats, beats[1:], strict=False))
    for feats in cues.values():
        assert -50 < feats["loudness_lufs"] < 0
        assert 0 <= feats["loudness_range_lu"] < 40


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("cues") / "standard.mp4", standard_shots())


def test_every_shot_of_a_run_carries_the_new_fields(film: FilmTruth) -> None:
    prepared = list(ShotSource(probe(film.path), ExtractOptions()))
    assert len(prepared) == len(film.shots)
    for p, spec in zip(prepared, film.shots, strict=True):
        assert p.speech_error is None and p.base_record()["speech_error"] is None
        feats = p.audio_features
        assert feats is not None
        AudioFeatures.model_validate(feats)
        assert feats["speech_ratio"] < 0.2  # tones, noise and silence are not speech
        if spec.audio == "silence":
            # AAC leaves a faint tail of the neighbouring shots at the edges: quiet, not silent.
            assert feats["music_ratio"] == 0.0 and (feats["loudness_lufs"] or -70.0) < -50
            assert feats["beat_times"] == [] and feats["tempo"] is None
        if spec.audio == "tone" and p.shot.duration >= 0.4:
            assert feats["loudness_lufs"] is not None


def test_speech_off_leaves_the_speech_fields_out(film: FilmTruth) -> None:
    options = ExtractOptions(audio=AudioOptions(speech=False))
    prepared = list(ShotSource(probe(film.path), options))
    assert prepared and all(p.speech_error is None for p in prepared)
    assert all("speech_ratio" not in (p.audio_features or {}) for p in prepared)
