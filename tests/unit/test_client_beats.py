"""The numpy port of librosa's tempo estimate and beat tracker gives librosa's own answers.

Compared on onset envelopes of real recordings (decoded by the client's audio path), of a
click track, of random sparse onsets and of very short envelopes: the tempo must be the same
BPM (relative 1e-9) and the beat frames identical.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from client.media import spectral
from client.media.beats import estimate_tempo, onset_strength, track_beats
from tests.audio_media import decode_audio

librosa = pytest.importorskip("librosa")

SR = 22050
HOP = 512


def _onset(y: np.ndarray) -> np.ndarray:
    power = spectral.stft_magnitude(np.asarray(y, np.float32)) ** 2
    return onset_strength(spectral.power_to_db(power @ spectral.mel_filter_bank(SR).T), 2048, HOP)


@pytest.fixture(scope="module")
def envelopes(shared_media: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    clicks = np.zeros(SR * 10, np.float32)
    for beat in np.arange(0, 10, 60 / 97):  # 97 BPM
        clicks[int(beat * SR) : int(beat * SR) + 300] = 0.7
    sparse = np.where(rng.random(900) < 0.05, rng.random(900), 0.0).astype(np.float32)
    return {
        "speech": _onset(decode_audio(shared_media / "speech_jfk_11s.flac", SR)),
        "music": _onset(decode_audio(shared_media / "music_vibe_ace.ogg", SR, 0.0, 30.0)),
        "whale": _onset(decode_audio(shared_media / "ambience_humpback.ogg", SR, 0.0, 20.0)),
        "film": _onset(decode_audio(shared_media / "bbb_opening_40s.mkv", SR)),
        "clicks": _onset(clicks),
        "sparse": sparse,
        "short": _onset(clicks[: SR * 2]),
        "tiny": sparse[:40],
    }


def test_onset_envelope_equals_librosas(shared_media: Path) -> None:
    y = decode_audio(shared_media / "music_vibe_ace.ogg", SR, 5.0, 15.0)
    power = spectral.stft_magnitude(y) ** 2
    mel_db = spectral.power_to_db(power @ spectral.mel_filter_bank(SR).T)
    ref = librosa.onset.onset_strength(S=mel_db.T, sr=SR, hop_length=HOP)
    np.testing.assert_allclose(onset_strength(mel_db, 2048, HOP), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["speech", "music", "whale", "film", "clicks", "sparse", "short", "tiny"]
)
def test_tempo_and_beats_equal_librosas(envelopes: dict[str, np.ndarray], name: str) -> None:
    onset = envelopes[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_tempo, ref_beats = librosa.beat.beat_track(onset_envelope=onset, sr=SR, hop_length=HOP)
        ref_bpm = float(np.ravel(librosa.feature.tempo(onset_envelope=onset, sr=SR))[0])
    bpm, beats = track_beats(onset, SR, HOP)
    assert bpm == pytest.approx(float(np.ravel(ref_tempo)[0]), rel=1e-9)
    assert estimate_tempo(onset.astype(np.float64), SR, HOP) == pytest.approx(ref_bpm, rel=1e-9)
    np.testing.assert_array_equal(beats, ref_beats)


def test_no_onsets_no_beats() -> None:
    for flat in (np.zeros(500), np.full(500, 0.3), np.zeros(1)):
        bpm, beats = track_beats(flat, SR, HOP)
        assert bpm == 0.0 and len(beats) == 0


def test_a_click_track_gives_its_tempo(envelopes: dict[str, np.ndarray]) -> None:
    bpm, beats = track_beats(envelopes["clicks"], SR, HOP)
    period = 60 / 97 * SR / HOP
    assert abs(bpm - 97) < 4 or abs(bpm - 194) < 8
    spacing = np.diff(beats)
    assert np.median(spacing) == pytest.approx(period if bpm < 150 else period / 2, rel=0.05)
