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

The K-weighting is pyloudnorm's: the same two biquads (a high shelf of +4 dB at 1500 Hz, Q
1/sqrt(2), then a high pass at 38 Hz, Q 0.5) designed for the track's rate with the RBJ cookbook
formulas pyloudnorm's ``IIRfilter.generate_coefficients`` uses (``k_weighting_biquads``; the
unit tests check the coefficients equal pyloudnorm's). They are applied without scipy.signal:
importing it (pyloudnorm imports it for ``lfilter``) cost 0.6-0.9 s of CPU per process, next to
a 2.5 s decode of a minute of 1080p. The cascade is a linear time-invariant filter whose poles
lie inside the unit circle, so its impulse response decays geometrically; ``k_weighting_fir``
runs the two recursions on a unit impulse until what is left of the response is below 1e-13 of
its peak (about 3,000 taps at 22.05 kHz) and the signal is convolved with that response by FFT
(overlap-add, ``client.media.spectral``'s FFT). That is ``lfilter`` with zero initial state to
within float64 rounding (the tests compare the loudness with pyloudnorm's own meter).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from client.media import spectral

BLOCK_SECONDS = 0.4
BLOCK_OVERLAP = 0.75
SHORT_TERM_SECONDS = 3.0
SHORT_TERM_HOP_SECONDS = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0  # BS.1770-4 integrated loudness
LRA_RELATIVE_GATE_LU = -20.0  # EBU Tech 3342
LRA_PERCENTILES = (10.0, 95.0)


K_SHELF = (4.0, 1.0 / math.sqrt(2.0), 1500.0)  # gain dB, Q, centre Hz (pyloudnorm's K-weighting)
K_HIGH_PASS = (0.0, 0.5, 38.0)
FIR_TAIL = 1e-13  # the impulse response is cut where what remains is below this share
FIR_BLOCK = 1 << 15  # overlap-add FFT size


def k_weighting_biquads(sr: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(b, a) of pyloudnorm's two K-weighting stages at ``sr``, normalised so a[0] = 1: the RBJ
    cookbook high shelf and high pass exactly as pyloudnorm's ``IIRfilter`` designs them."""
    stages = []
    for kind, (gain, q, fc) in (("high_shelf", K_SHELF), ("high_pass", K_HIGH_PASS)):
        amp = 10 ** (gain / 40.0)
        w0 = 2.0 * np.pi * (fc / sr)
        alpha = np.sin(w0) / (2.0 * q)
        cos, root = np.cos(w0), np.sqrt(amp)
        if kind == "high_shelf":
            b = [
                amp * ((amp + 1) + (amp - 1) * cos + 2 * root * alpha),
                -2 * amp * ((amp - 1) + (amp + 1) * cos),
                amp * ((amp + 1) + (amp - 1) * cos - 2 * root * alpha),
            ]
            a = [
                (amp + 1) - (amp - 1) * cos + 2 * root * alpha,
                2 * ((amp - 1) - (amp + 1) * cos),
                (amp + 1) - (amp - 1) * cos - 2 * root * alpha,
            ]
        else:
            b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
            a = [1 + alpha, -2 * cos, 1 - alpha]
        stages.append((np.array(b) / a[0], np.array(a) / a[0]))
    return stages


@functools.lru_cache(maxsize=4)
def k_weighting_fir(sr: int) -> np.ndarray:
    """The K-weighting cascade's impulse response at ``sr``, long enough that the rest of it
    is below ``FIR_TAIL`` of its peak (see the module doc)."""
    stages = k_weighting_biquads(sr)
    # Both stages' poles have radius below 1; the response past n decays like n * r**n.
    radius = max(float(np.max(np.abs(np.roots(a)))) for _, a in stages)
    n = 64
    while n * radius**n / (1.0 - radius) > FIR_TAIL and n < 1 << 22:
        n *= 2
    response = np.zeros(n)
    response[0] = 1.0
    for b, a in stages:
        response = _biquad(b, a, response)
    return response


def _biquad(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Direct form I of one biquad with zero initial state, in Python (only for the few
    thousand samples of an impulse response)."""
    b0, b1, b2 = (float(v) for v in b)
    _, a1, a2 = (float(v) for v in a)
    out = np.empty(len(x))
    x1 = x2 = y1 = y2 = 0.0
    for i, x0 in enumerate(x.tolist()):
        y0 = b0 * x0 + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        out[i] = y0
        x2, x1, y2, y1 = x1, x0, y1, y0
    return out


@functools.lru_cache(maxsize=4)
def _fir_spectrum(sr: int) -> tuple[np.ndarray, int]:
    """The FIR's spectrum for overlap-add blocks, and how many input samples each block takes."""
    h = k_weighting_fir(sr)
    size = max(FIR_BLOCK, 1 << int(np.ceil(np.log2(2 * len(h)))))
    return spectral.rfft(h, size), size - len(h) + 1


def k_weighted(y: np.ndarray, sr: int) -> np.ndarray:
    """The signal through the K-weighting filter (float64, the input's length)."""
    x = np.asarray(y, dtype=np.float64)
    h_len = len(k_weighting_fir(sr))
    spectrum, step = _fir_spectrum(sr)
    size = step + h_len - 1
    out = np.zeros(len(x) + size)
    for first in range(0, len(x), step):
        block = spectral.irfft(spectral.rfft(x[first : first + step], size) * spectrum, size)
        out[first : first + size] += block
    return out[: len(x)]


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
