"""Integrated loudness equals pyloudnorm's BS.1770-4 meter; the EBU Tech 3342 loudness range
measures known level steps; both are None where the measure does not exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.media.loudness import measure_loudness
from tests.audio_media import decode_audio

pyloudnorm = pytest.importorskip("pyloudnorm")

SR = 22050


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise with an RMS of ``dbfs``."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 1.0, int(SR * seconds)) * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize("source", ["speech", "music", "steps", "short", "film"])
def test_integrated_loudness_equals_pyloudnorm(shared_media: Path, source: str) -> None:
    y = {
        "speech": lambda: decode_audio(shared_media / "speech_jfk_11s.flac", SR),
        "music": lambda: decode_audio(shared_media / "music_vibe_ace.ogg", SR, 0.0, 20.0),
        "film": lambda: decode_audio(shared_media / "sintel_excerpt_26s.mp4", SR),
        "steps": lambda: np.concatenate([_noise(4, -40), _noise(3, -12, 1), _noise(5, -75, 2)]),
        "short": lambda: _noise(0.45, -20),
    }[source]()
    ref = pyloudnorm.Meter(SR).integrated_loudness(y.astype(np.float64))
    assert measure_loudness(y, SR)["loudness_lufs"] == pytest.approx(ref, abs=0.006)  # 0.01 steps


def test_a_997_hz_sine_reads_its_bs1770_level() -> None:
    t = np.arange(SR * 5) / SR
    y = (0.1 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)  # -20 dBFS peak
    # BS.1770: a full-scale 997 Hz sine in one channel is -3.01 LKFS; K-weighting designed at
    # 22.05 kHz (pyloudnorm) is within 0.1 dB of the 48 kHz response at 1 kHz.
    assert measure_loudness(y, SR)["loudness_lufs"] == pytest.approx(-23.01, abs=0.1)


def test_loudness_range_of_level_steps() -> None:
    # 20 s at -30 dBFS then 20 s at -20 dBFS: the short-term loudness spends half its time 10 LU
    # above the other half, so the 10th..95th percentile spread is the step, 10 LU.
    stepped = np.concatenate([_noise(20, -30), _noise(20, -20, 1)])
    assert measure_loudness(stepped, SR)["loudness_range_lu"] == pytest.approx(10.0, abs=0.3)
    # A steady signal has (almost) no range.
    assert measure_loudness(_noise(20, -20), SR)["loudness_range_lu"] < 0.5
    # A step below the relative gate (-20 LU under the mean) is not counted: 60 s of -20 dBFS
    # with 20 s at -50 dBFS in between measures like the steady signal.
    gated = np.concatenate([_noise(30, -20), _noise(20, -50, 1), _noise(30, -20, 2)])
    assert measure_loudness(gated, SR)["loudness_range_lu"] < 0.5


def test_undefined_measures_are_none() -> None:
    assert measure_loudness(_noise(0.3, -20), SR) == {
        "loudness_lufs": None,
        "loudness_range_lu": None,
    }
    two_seconds = measure_loudness(_noise(2.0, -20), SR)
    assert two_seconds["loudness_lufs"] is not None and two_seconds["loudness_range_lu"] is None
    silent = measure_loudness(np.zeros(SR * 5, np.float32), SR)
    assert silent == {"loudness_lufs": None, "loudness_range_lu": None}  # gated silent
    quiet = measure_loudness(_noise(5, -85), SR)  # below the -70 LUFS absolute gate
    assert quiet == {"loudness_lufs": None, "loudness_range_lu": None}


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_k_weighting_is_pyloudnorms_filter(sr: int) -> None:
    """The same biquads as pyloudnorm's meter, and the FIR of their impulse response filters
    as scipy's lfilter of those biquads does (zero initial state), to float64 rounding."""
    from client.media.loudness import k_weighted, k_weighting_biquads

    stages = list(pyloudnorm.Meter(sr)._filters.values())
    ours = k_weighting_biquads(sr)
    assert len(ours) == len(stages) == 2
    for (b, a), stage in zip(ours, stages, strict=True):
        np.testing.assert_allclose(b, stage.b, rtol=1e-13)
        np.testing.assert_allclose(a, stage.a, rtol=1e-13)
    x = np.random.default_rng(sr).normal(0.0, 0.3, int(sr * 2.5))
    ref = x
    for stage in stages:
        ref = stage.apply_filter(ref)
    np.testing.assert_allclose(k_weighted(x, sr), ref, rtol=0, atol=1e-11)


def test_the_audio_features_do_not_import_scipy() -> None:
    """scipy.signal cost 0.6-0.9 s of CPU per process and scipy.fft 0.3 s: the run path uses
    numpy's FFT, libswresample and its own K-weighting instead."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from client.media import features\n"
        "y = np.random.default_rng(0).uniform(-0.2, 0.2, 22050 * 5).astype(np.float32)\n"
        "out, err = features.shot_audio_features(y, 22050, 2.0)\n"
        "assert out['loudness_lufs'] is not None and 'speech_ratio' in out, (out, err)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'pyloudnorm')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
