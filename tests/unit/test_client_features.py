"""Per-shot librosa features: contract field names, finite values, and physical sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client.media.features import compute_features
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


def test_fields_match_the_contract() -> None:
    feats = compute_features(_tone(440, 1.0), SR)
    assert set(feats) == set(AudioFeatures.model_fields)
    assert len(feats["mfcc_mean"]) == 13 and len(feats["mfcc_std"]) == 13
    assert len(feats["chroma_mean"]) == 12
    AudioFeatures.model_validate(feats)  # the server's own validation accepts them


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


def test_tempo_only_for_long_enough_shots() -> None:
    clicks = np.zeros(SR * 6, np.float32)
    for beat in np.arange(0, 6, 0.5):  # 120 BPM
        i = int(beat * SR)
        clicks[i : i + 200] = 0.8
    assert compute_features(clicks[: SR * 2], SR, tempo_min_seconds=3.0)["tempo"] is None
    tempo = compute_features(clicks, SR, tempo_min_seconds=3.0)["tempo"]
    assert tempo is not None and (
        abs(tempo - 120) < 6 or abs(tempo - 60) < 3 or abs(tempo - 240) < 12
    )


def test_tiny_and_broken_signals_still_give_finite_features() -> None:
    assert _all_finite(compute_features(_tone(440, 0.01), SR))  # shorter than one FFT window
    assert _all_finite(compute_features(np.zeros(0, np.float32), SR))
    broken = _noise(1.0)
    broken[100:200] = np.nan
    assert _all_finite(compute_features(broken, SR))
