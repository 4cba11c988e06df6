"""Loudness of a shot: integrated loudness (ITU-R BS.1770-4) and loudness range (EBU Tech 3342).

Both are measured on one K-weighted copy of the mono signal, filtered with pyloudnorm's
K-weighting (its high-shelf and high-pass biquads, designed for the track's sample rate):

- ``loudness_lufs``: pyloudnorm's ``Meter.integrated_loudness`` algorithm (400 ms blocks every
  100 ms, absolute gate -70 LUFS, relative gate -10 LU), computed from running sums instead of
  its per-block Python loop; ``tests/unit/test_client_loudness.py`` checks it equals
  pyloudnorm's own result. None when the window is shorter than one block or every block is
  below the absolute gate (silence): "no measurable loudness" is not a number.
- ``loudness_range_lu``: EBU Tech 3342 LRA: short-term loudness of 3 s windows every 100 ms
  (the 10 Hz minimum rate of Tech 3342), absolute gate -70 LUFS, relative gate 20 LU below
  the power mean of the absolutely gated windows, then the 95th minus the 10th percentile.
  None for windows under 3 s or when nothing passes the gates. pyloudnorm's own
  ``loudness_range`` appends 1.5 s of silence and loops over 3 s blocks in Python (about a
  second per minute of audio), which is why it is not called.

pyloudnorm (and through it scipy.signal) is imported on first use, not with this module.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

BLOCK_SECONDS = 0.4
BLOCK_OVERLAP = 0.75
SHORT_TERM_SECONDS = 3.0
SHORT_TERM_HOP_SECONDS = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0  # BS.1770-4 integrated loudness
LRA_RELATIVE_GATE_LU = -20.0  # EBU Tech 3342
LRA_PERCENTILES = (10.0, 95.0)


@functools.lru_cache(maxsize=4)
def _k_filters(sr: int) -> list[Any]:
    """pyloudnorm's K-weighting stages (high shelf, then high pass) at ``sr``."""
    import pyloudnorm

    return list(pyloudnorm.Meter(sr, filter_class="K-weighting")._filters.values())


def k_weighted(y: np.ndarray, sr: int) -> np.ndarray:
    """The signal through the K-weighting filter (float64)."""
    out = np.asarray(y, dtype=np.float64)
    for stage in _k_filters(sr):
        out = stage.apply_filter(out)
    return out


def _block_power(
    energy: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: float
) -> np.ndarray:
    """Mean square of the filtered signal in each [start, end) block, divided by the nominal
    block width (a block cut short by the signal's end counts its missing samples as silence,
    as pyloudnorm does)."""
    n = len(energy) - 1
    return (energy[np.minimum(ends, n)] - energy[np.minimum(starts, n)]) / width


def _to_lufs(power: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(power)


def integrated_loudness(energy: np.ndarray, sr: int) -> float | None:
    """BS.1770-4 gated loudness from the running energy of the K-weighted signal."""
    n = len(energy) - 1
    duration = n / sr
    if duration < BLOCK_SECONDS:
        return None
    step = 1.0 - BLOCK_OVERLAP
    count = int(np.round((duration - BLOCK_SECONDS) / (BLOCK_SECONDS * step))) + 1
    j = np.arange(count)
    # The same float expressions as pyloudnorm, so block edges land on the same samples.
    starts = (BLOCK_SECONDS * (j * step) * sr).astype(np.int64)
    ends = (BLOCK_SECONDS * (j * step + 1) * sr).astype(np.int64)
    power = _block_power(energy, starts, ends, BLOCK_SECONDS * sr)
    loud = _to_lufs(power)
    gated = loud >= ABSOLUTE_GATE_LUFS
    if not gated.any():
        return None
    relative = float(_to_lufs(np.array([power[gated].mean()]))[0]) + RELATIVE_GATE_LU
    keep = (loud > relative) & (loud > ABSOLUTE_GATE_LUFS)  # strict, as pyloudnorm
    if not keep.any():
        return None
    value = float(_to_lufs(np.array([power[keep].mean()]))[0])
    return value if np.isfinite(value) else None


def loudness_range(energy: np.ndarray, sr: int) -> float | None:
    """EBU Tech 3342 loudness range in LU from the running energy of the K-weighted signal."""
    n = len(energy) - 1
    width = int(round(SHORT_TERM_SECONDS * sr))
    if n < width:
        return None
    hop = SHORT_TERM_HOP_SECONDS * sr
    starts = np.round(np.arange(0, n - width + 1, hop)).astype(np.int64)
    starts = starts[starts + width <= n]
    power = _block_power(energy, starts, starts + width, width)
    loud = _to_lufs(power)
    loud = loud[loud >= ABSOLUTE_GATE_LUFS]
    if not len(loud):
        return None
    mean = 10.0 * np.log10(np.mean(np.power(10.0, loud / 10.0)))
    loud = loud[loud >= mean + LRA_RELATIVE_GATE_LU]
    if not len(loud):
        return None
    low, high = np.percentile(loud, LRA_PERCENTILES)
    return float(max(0.0, high - low))


def measure_loudness(y: np.ndarray, sr: int) -> dict[str, float | None]:
    """``loudness_lufs`` and ``loudness_range_lu`` of a mono float signal (None where the
    measure is undefined: see the module doc), rounded to 0.01."""
    y = np.nan_to_num(np.asarray(y, dtype=np.float64))
    if len(y) < BLOCK_SECONDS * sr:
        return {"loudness_lufs": None, "loudness_range_lu": None}
    energy = np.concatenate(([0.0], np.cumsum(k_weighted(y, sr) ** 2)))
    lufs = integrated_loudness(energy, sr)
    lra = loudness_range(energy, sr)
    return {
        "loudness_lufs": None if lufs is None else round(lufs, 2),
        "loudness_range_lu": None if lra is None else round(lra, 2),
    }
