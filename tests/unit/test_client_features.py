"""Per-shot audio features: contract field names, finite values, physical sanity, beats,
music_ratio's rule and the speech_error path (values against librosa: test_client_spectral)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client.media import speech as speech_module
from client.media.features import compute_features, shot_audio_features
from client.media.speech import Speech
from qwen_server.contract.analysis import AudioFeatures

SR = 22050


def _tone(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _noise(seconds: float, amp: float = 0.3) -> np.ndarray:
    return np.random.default_rng(1).uniform(-amp, amp, int(SR * seconds)).astype(np.float32)


def _all_finite(feats: dict) -> bool:
    values = []
    for v in feats.values():
        if isinstance(v, list):
            values += v
        elif v is not None:
            values.append(v)
    return all(math.isfinite(x) for x in values)


SPEECH_FIELDS = {"speech_ratio", "speech_segments", "music_ratio"}


def test_fields_match_the_contract() -> None:
    feats, error = shot_audio_features(_tone(440, 4.0), SR, 2.0)
    assert error is None
    assert set(feats) == set(AudioFeatures.model_fields)
    assert len(feats["mfcc_mean"]) == 13 and len(feats["mfcc_std"]) == 13
    assert len(feats["chroma_mean"]) == 12
    AudioFeatures.model_validate(feats)  # the server's own validation accepts them
    # Without a speech measurement the speech fields, and music_ratio that needs them, are absent.
    assert set(compute_features(_tone(440, 1.0), SR)) == set(AudioFeatures.model_fields) - (
        SPEECH_FIELDS
    )


def test_a_missing_vad_model_gives_speech_error_and_no_speech_fields(
    tmp_path: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A process whose silero-vad package has no model file: the real lookup finds nothing.
    monkeypatch.setattr(speech_module, "model_dir", lambda: tmp_path)
    monkeypatch.setattr(speech_module, "_session", None)
    monkeypatch.setattr(speech_module, "_session_error", None)
    monkeypatch.setattr(speech_module, "_warned", False)
    with caplog.at_level("WARNING", logger="client.media.speech"):
        first, error = shot_audio_features(_tone(440, 1.0), SR, 2.0)
        second, again = shot_audio_features(_tone(440, 1.0), SR, 2.0)
    assert error is not None and "silero_vad.onnx" in error and again == error
    assert not SPEECH_FIELDS & set(first) and not SPEECH_FIELDS & set(second)
    assert first["rms_energy_mean"] > 0.1  # the other features are still there
    assert sum("speech detection disabled" in r.message for r in caplog.records) == 1  # once


def test_speech_can_be_switched_off() -> None:
    feats, error = shot_audio_features(_tone(440, 1.0), SR, 2.0, speech=False)
    assert error is None and not SPEECH_FIELDS & set(feats)


def test_silence_is_finite_and_quiet() -> None:
    feats = compute_features(np.zeros(SR * 4, np.float32), SR)
    assert _all_finite(feats)
    assert feats["rms_energy_mean"] == 0.0 and feats["rms_energy_std"] == 0.0
    assert feats["tempo"] is None  # no beat in silence
    assert all(c == 0.0 for c in feats["chroma_mean"])
    AudioFeatures.model_validate(feats)


@pytest.mark.parametrize("freq", [220.0, 440.0, 1000.0, 3000.0])
def test_tone_centroid_is_near_its_frequency(freq: float) -> None:
    feats = compute_features(_tone(freq, 2.0), SR)
    assert abs(feats["spectral_centroid_mean"] - freq) < 0.1 * freq
    assert abs(feats["rms_energy_mean"] - 0.5 / math.sqrt(2)) < 0.02


def test_noise_crosses_zero_more_often_than_a_tone() -> None:
    tone = compute_features(_tone(440, 2.0), SR)
    noise = compute_features(_noise(2.0), SR)
    assert noise["zero_crossing_rate_mean"] > 5 * tone["zero_crossing_rate_mean"]
    assert noise["spectral_centroid_mean"] > tone["spectral_centroid_mean"]
    assert noise["spectral_bandwidth_mean"] > tone["spectral_bandwidth_mean"]


def test_chroma_of_a_tone_peaks_at_its_pitch_class() -> None:
    feats = compute_features(_tone(440.0, 2.0), SR)  # A4
    assert int(np.argmax(feats["chroma_mean"])) == 9  # C, C#, ..., A is index 9


def _clicks(seconds: float, period: float = 0.5) -> np.ndarray:
    clicks = np.zeros(int(SR * seconds), np.float32)
    for beat in np.arange(0, seconds, period):
        i = int(beat * SR)
        clicks[i : i + 200] = 0.8
    return clicks


def test_tempo_only_for_long_enough_shots() -> None:
    clicks = _clicks(6.0)  # 120 BPM
    assert compute_features(clicks[: SR * 2], SR, tempo_min_seconds=3.0)["tempo"] is None
    assert compute_features(clicks[: SR * 2], SR, tempo_min_seconds=3.0)["beat_times"] == []
    tempo = compute_features(clicks, SR, tempo_min_seconds=3.0)["tempo"]
    assert tempo is not None and (
        abs(tempo - 120) < 6 or abs(tempo - 60) < 3 or abs(tempo - 240) < 12
    )


def test_beat_times_fall_on_the_clicks() -> None:
    feats = compute_features(_clicks(8.0), SR)
    beats = np.array(feats["beat_times"])
    assert len(beats) >= 10 and np.all(np.diff(beats) > 0) and beats[-1] <= 8.0
    # Every beat is within one STFT hop (23 ms) plus the onset lag of a click (every 0.5 s).
    offset = (beats + 0.25) % 0.5 - 0.25
    assert np.all(np.abs(offset) < 0.06), offset


def test_silence_has_no_beats_and_no_loudness() -> None:
    feats, _ = shot_audio_features(np.zeros(SR * 4, np.float32), SR, 2.0)
    assert feats["tempo"] is None and feats["beat_times"] == []
    assert feats["loudness_lufs"] is None and feats["loudness_range_lu"] is None
    assert feats["speech_ratio"] == 0.0 and feats["speech_segments"] == []
    assert feats["music_ratio"] == 0.0  # below the silence gate


def test_music_ratio_follows_its_rule() -> None:
    t = np.arange(SR * 4) / SR
    chord = sum(np.sin(2 * math.pi * f * t) for f in (261.63, 329.63, 392.0)) * 0.15
    chord = chord.astype(np.float32)
    no_speech = Speech([], 4.0)
    held = compute_features(chord, SR, speech=no_speech)
    assert held["music_ratio"] > 0.9  # a held C major chord: sounding, steady, tonal
    noise = compute_features(_noise(4.0), SR, speech=no_speech)
    assert noise["music_ratio"] < 0.05  # white noise is flat and has no steady pitch class
    half_talk = compute_features(chord, SR, speech=Speech([(0.0, 2.0)], 4.0))
    assert abs(half_talk["music_ratio"] - held["music_ratio"] / 2) < 0.05  # speech is not music
    assert half_talk["speech_ratio"] == 0.5
    quiet = compute_features(chord * 1e-3, SR, speech=no_speech)  # about -60 dBFS
    assert quiet["music_ratio"] == 0.0


def test_tiny_and_broken_signals_still_give_finite_features() -> None:
    assert _all_finite(compute_features(_tone(440, 0.01), SR))  # shorter than one FFT window
    assert _all_finite(compute_features(np.zeros(0, np.float32), SR))
    broken = _noise(1.0)
    broken[100:200] = np.nan
    assert _all_finite(compute_features(broken, SR))
    feats, _ = shot_audio_features(broken, SR, 2.0)
    AudioFeatures.model_validate(feats)
