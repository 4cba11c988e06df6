"""The numpy/scipy audio features equal librosa 0.11's, which first defined them.

``compute_features`` no longer runs librosa (its numba JIT cost seconds per process), so each
field is compared here with the librosa computation it replaced, on real recordings decoded by
the client's audio path and on synthetic signals. Tolerance: relative 1e-4 (absolute 1e-4 for
values near zero, e.g. MFCC means). The remaining differences are float32 rounding in the
STFT (librosa frames and windows in another order); a pure sine is left out because its
spectral bandwidth and chroma are sums of float32 rounding noise in empty bins, where any two
FFT implementations disagree by percents.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from client.media import spectral
from client.media.features import compute_features
from tests.audio_media import decode_audio

librosa = pytest.importorskip("librosa")

SR = 22050
RTOL = 1e-4
ATOL = 1e-4


def _librosa_features(y: np.ndarray) -> dict[str, object]:
    """The pre-issue-15 ``compute_features`` body (librosa), plus its beat tracker."""
    y = np.asarray(y, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
        power = mag**2
        centroid = librosa.feature.spectral_centroid(S=mag, sr=SR)
        rolloff = librosa.feature.spectral_rolloff(S=mag, sr=SR, roll_percent=0.85)
        bandwidth = librosa.feature.spectral_bandwidth(S=mag, sr=SR, centroid=centroid)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
        rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=512)
        mel_fb = librosa.filters.mel(sr=SR, n_fft=2048)
        chroma_fb = librosa.filters.chroma(sr=SR, n_fft=2048, tuning=0.0)
        mel_db = librosa.power_to_db(mel_fb @ power)
        mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=13)
        chroma = librosa.util.normalize(chroma_fb @ power, norm=np.inf, axis=-2)
        onset = librosa.onset.onset_strength(S=mel_db, sr=SR, hop_length=512)
        tempo, beats = librosa.beat.beat_track(onset_envelope=onset, sr=SR, hop_length=512)
    return {
        "mfcc_mean": mfcc.mean(axis=1),
        "mfcc_std": mfcc.std(axis=1),
        "spectral_centroid_mean": centroid.mean(),
        "spectral_rolloff_mean": rolloff.mean(),
        "spectral_bandwidth_mean": bandwidth.mean(),
        "zero_crossing_rate_mean": zcr.mean(),
        "rms_energy_mean": rms.mean(),
        "rms_energy_std": rms.std(),
        "chroma_mean": chroma.mean(axis=1),
        "tempo": float(np.ravel(tempo)[0]),
        "beat_times": beats * 512 / SR,
    }


def _signals(media: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(SR * 5) / SR
    clicks = np.zeros(SR * 6, np.float32)
    for beat in np.arange(0, 6, 0.5):
        clicks[int(beat * SR) : int(beat * SR) + 200] = 0.8
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) * 0.2
    return {
        "speech": decode_audio(media / "speech_jfk_11s.flac", SR, 0.0, 8.0),
        "music": decode_audio(media / "music_vibe_ace.ogg", SR, 10.0, 18.0),
        "whale": decode_audio(media / "ambience_humpback.ogg", SR, 20.0, 28.0),
        "film": decode_audio(media / "sintel_excerpt_26s.mp4", SR, 4.0, 12.0),
        "noise": rng.uniform(-0.3, 0.3, SR * 5).astype(np.float32),
        "clicks": clicks,
        "chord_in_noise": (chord + rng.normal(0, 1e-3, len(t))).astype(np.float32),
    }


@pytest.fixture(scope="module")
def signals(shared_media: Path) -> dict[str, np.ndarray]:
    return _signals(shared_media)


def test_filter_banks_equal_librosas() -> None:
    mel = librosa.filters.mel(sr=SR, n_fft=2048)
    chroma = librosa.filters.chroma(sr=SR, n_fft=2048, tuning=0.0)
    np.testing.assert_allclose(spectral.mel_filter_bank(SR), mel, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(spectral.chroma_filter_bank(SR), chroma, rtol=1e-5, atol=1e-9)
    for sr in (16000, 44100, 48000):  # other --audio-rate values
        np.testing.assert_allclose(
            spectral.mel_filter_bank(sr),
            librosa.filters.mel(sr=sr, n_fft=2048),
            rtol=1e-5,
            atol=1e-9,
        )


@pytest.mark.parametrize(
    "name", ["speech", "music", "whale", "film", "noise", "clicks", "chord_in_noise"]
)
def test_features_equal_librosas(signals: dict[str, np.ndarray], name: str) -> None:
    y = signals[name]
    ours = compute_features(y, SR, tempo_min_seconds=0.0)
    ref = _librosa_features(y)
    for key, value in ref.items():
        if key == "beat_times":
            # Same beat frames; ours are rounded to 0.1 ms.
            np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-4, err_msg=key)
        else:
            np.testing.assert_allclose(ours[key], value, rtol=RTOL, atol=ATOL, err_msg=key)


def test_framing_helpers_equal_librosas(signals: dict[str, np.ndarray]) -> None:
    y = signals["whale"]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)[0]
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=512)[0]
    np.testing.assert_array_equal(spectral.frame_zero_crossing_rate(y), zcr)
    np.testing.assert_allclose(spectral.frame_rms(y), rms, rtol=1e-5, atol=1e-9)
    mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    np.testing.assert_allclose(spectral.stft_magnitude(y).T, mag, rtol=0, atol=1e-5 * mag.max())
