"""Spectral building blocks of the per-shot audio features, in numpy alone (no librosa, no numba,
no scipy).

Each function reproduces the librosa 0.11 computation the features were first defined with
(``stft``, ``filters.mel``, ``filters.chroma``, ``power_to_db``, ``feature.rms``,
``feature.zero_crossing_rate``), so field meanings did not change when librosa left the run
path; ``tests/unit/test_client_spectral.py`` compares them with librosa itself. librosa is
avoided at run time because importing its feature and beat modules compiles numba kernels
(seconds per process even with a warm cache, tens of seconds on a fresh machine).

Framing follows librosa's ``center=True``: frame ``t`` is centred on sample ``t * hop``, the
signal padded by ``n_fft // 2`` (zeros for the STFT and RMS, edge values for the
zero-crossing rate), giving ``1 + len(y) // hop`` frames.

The FFTs are numpy's (``rfft``/``irfft`` here are the features' one FFT entry point), the MFCC's
DCT-II a cached orthonormal basis (``dct_matrix``): scipy.fft would be about twice as fast per
transform, but importing it costs 0.27 s of CPU per process (scipy.special and the array-API
layer come with it) while a minute of audio needs about 25 ms of FFTs either way, so numpy
wins for anything under about 20 minutes of audio and loses ~1 s on a 2-hour film.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

N_FFT = 2048
HOP = 512
N_MELS = 128
N_CHROMA = 12
AMIN = 1e-10  # power floor of power_to_db (-100 dB)
TOP_DB = 80.0  # power_to_db clips this far below the shot's loudest bin


@functools.lru_cache(maxsize=2)
def hann(n: int) -> np.ndarray:
    """Periodic Hann window (scipy's ``get_window("hann", n)``, as librosa's STFT uses)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def rfft(x: np.ndarray, n: int | None = None, axis: int = -1) -> np.ndarray:
    """Real FFT (the one FFT implementation of the audio features)."""
    return np.fft.rfft(x, n=n, axis=axis)


def irfft(x: np.ndarray, n: int | None = None, axis: int = -1) -> np.ndarray:
    """Inverse of ``rfft``."""
    return np.fft.irfft(x, n=n, axis=axis)


def n_frames(n_samples: int, hop: int = HOP) -> int:
    """Frames of a centred framing of ``n_samples``."""
    return 1 + n_samples // hop


def stft_magnitude(y: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """|STFT| of a float32 signal, zero-padded centred frames, frames-major: shape (frames,
    1 + n_fft // 2) (librosa's is the transpose; this layout keeps every per-frame reduction
    on contiguous memory). Computed in blocks so the framed copy stays a few MB."""
    padded = np.pad(y, n_fft // 2)
    frames = sliding_window_view(padded, n_fft)[::hop]
    window = hann(n_fft)
    out = np.empty((len(frames), n_fft // 2 + 1), np.float32)
    block = 512
    for first in range(0, len(frames), block):
        chunk = frames[first : first + block] * window
        out[first : first + block] = np.abs(rfft(chunk, axis=1))
    return out


def fft_frequencies(sr: int, n_fft: int = N_FFT) -> np.ndarray:
    """Centre frequency in Hz of each STFT bin."""
    return np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear to 1 kHz, then log."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    mel = hz / f_sp
    high = hz >= min_log_hz
    mel[high] = min_log_mel + np.log(hz[high] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of ``_hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    hz = f_sp * mel
    high = mel >= min_log_mel
    hz[high] = min_log_hz * np.exp(logstep * (mel[high] - min_log_mel))
    return hz


@functools.lru_cache(maxsize=4)
def mel_filter_bank(sr: int, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised triangular mel filters from 0 Hz to Nyquist, (n_mels, 1 + n_fft // 2),
    as ``librosa.filters.mel(sr=sr, n_fft=n_fft)``. Built once per rate (it costs more than a
    short shot's STFT)."""
    fft_freqs = fft_frequencies(sr, n_fft)
    mel_f = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2)
    )
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=4)
def chroma_filter_bank(sr: int, n_fft: int = N_FFT) -> np.ndarray:
    """Gaussian pitch-class filters (12, 1 + n_fft // 2), A440 tuning, C first, centred on
    octave 5 with a 2-octave spread, as ``librosa.filters.chroma(sr=sr, n_fft=n_fft,
    tuning=0)`` (Dan Ellis's chroma filter bank)."""
    n = N_CHROMA
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n * np.log2(frequencies / (440.0 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n], frqbins))
    binwidth = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1.0]))
    d = np.subtract.outer(frqbins, np.arange(0, n, dtype=np.float64)).T
    half = np.round(n / 2.0)
    d = np.remainder(d + half + 10 * n, n) - half
    wts = np.exp(-0.5 * (2 * d / binwidth[None, :]) ** 2)
    norms = np.sqrt(np.sum(wts**2, axis=0, keepdims=True))
    wts = wts / np.where(norms < np.finfo(wts.dtype).tiny, 1.0, norms)
    wts *= np.exp(-0.5 * ((frqbins / n - 5.0) / 2.0) ** 2)[None, :]
    wts = np.roll(wts, -3, axis=0)
    return np.ascontiguousarray(wts[:, : 1 + n_fft // 2], dtype=np.float32)


def power_to_db(power: np.ndarray) -> np.ndarray:
    """10 log10(power) with a 1e-10 floor, clipped to 80 dB below the maximum (ref 1.0)."""
    db = 10.0 * np.log10(np.maximum(AMIN, power))
    return np.maximum(db, db.max() - TOP_DB) if db.size else db


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row (frame) divided by its max norm; all-zero rows stay zero (librosa's
    ``util.normalize(norm=np.inf)`` with its default threshold)."""
    scale = np.max(np.abs(x), axis=1, keepdims=True)
    return x / np.where(scale < np.finfo(x.dtype).tiny, 1.0, scale)


def frame_rms(y: np.ndarray, frame: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """RMS of each zero-padded centred frame (``librosa.feature.rms``), via a running sum."""
    padded = np.pad(y.astype(np.float64), frame // 2)
    energy = np.concatenate(([0.0], np.cumsum(padded**2)))
    starts = np.arange(n_frames(len(y), hop)) * hop
    return np.sqrt(np.maximum(0.0, energy[starts + frame] - energy[starts]) / frame)


def frame_zero_crossing_rate(y: np.ndarray, frame: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Share of sign changes in each edge-padded centred frame
    (``librosa.feature.zero_crossing_rate``: values within 1e-10 of zero count as positive,
    and a frame's first sample never counts as a crossing)."""
    padded = np.pad(y, frame // 2, mode="edge")
    negative = padded < -np.float32(1e-10)  # librosa compares in float32
    crossings = np.concatenate(([0], np.cumsum(negative[1:] != negative[:-1])))
    starts = np.arange(n_frames(len(y), hop)) * hop
    return (crossings[starts + frame - 1] - crossings[starts]) / frame


def mfcc(mel_db: np.ndarray, n_mfcc: int) -> np.ndarray:
    """The first ``n_mfcc`` orthonormal DCT-II coefficients of each log-mel frame (row)."""
    return mel_db @ dct_matrix(mel_db.shape[1], n_mfcc)


@functools.lru_cache(maxsize=4)
def dct_matrix(n: int, n_out: int) -> np.ndarray:
    """(n, n_out): the first ``n_out`` orthonormal DCT-II basis vectors as columns."""
    k = np.arange(n_out)[None, :]
    i = np.arange(n)[:, None]
    basis = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * np.sqrt(2.0 / n)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def next_fast_len(n: int) -> int:
    """The smallest 2**a * 3**b * 5**c >= n (a fast FFT length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best
