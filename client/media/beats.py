"""Tempo and beat times of a shot: librosa's algorithms ported to numpy (no numba, no JIT).

The onset envelope (mean positive log-mel flux), the tempo estimate (mean autocorrelation
tempogram over 8 s windows with a log-normal prior around 120 BPM) and the beat tracker (Ellis's
dynamic programme, "Beat tracking by dynamic programming", JNMR 2007) follow librosa 0.11's
``onset.onset_strength``, ``feature.tempo`` and ``beat.beat_track`` step by step, quirks
included, so the values are what librosa gives; ``tests/unit/test_client_beats.py`` checks
that on real and synthetic signals.

Why a port: librosa's beat module compiles numba kernels when it is imported, one of them
with ``cache=False``, so every process paid about 3 s (and a fresh machine about a minute,
building numba's cache) before the first beat; this code costs milliseconds per shot and
nothing at start-up. The dynamic programme runs in blocks of half a beat period: a beat's
predecessor lies at least that far back, so a whole block is computed from scores already
known, which keeps the Python loop to a few hundred iterations per audio minute.
"""

from __future__ import annotations

import numpy as np

from client.media import spectral

START_BPM = 120.0
MAX_TEMPO = 320.0
TIGHTNESS = 100.0
AC_SECONDS = 8.0  # tempogram window
TEMPOGRAM_BLOCK = 2048  # frames per tempogram block (bounds memory on long shots)


def onset_strength(mel_db: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Spectral flux onset envelope of a frames-major log-mel spectrogram (frames, bands):
    lag 1, mean over bands, shifted to the frame centres as
    ``librosa.onset.onset_strength(S=mel_db.T)``."""
    n = mel_db.shape[0]
    if n < 2:
        return np.zeros(n, np.float32)
    flux = np.maximum(0.0, mel_db[1:] - mel_db[:-1]).mean(axis=1)
    pad = 1 + n_fft // (2 * hop)
    return np.concatenate((np.zeros(pad, flux.dtype), flux))[:n]


def tempo_frequencies(n_bins: int, sr: int, hop: int) -> np.ndarray:
    """BPM of each autocorrelation lag (lag 0 is infinite)."""
    bpm = np.full(n_bins, np.inf)
    bpm[1:] = 60.0 * sr / (hop * np.arange(1, n_bins))
    return bpm


def _mean_tempogram(onset: np.ndarray, win: int) -> np.ndarray:
    """Mean over frames of the max-normalised local autocorrelation of the onset envelope
    (``librosa.feature.tempogram`` with centred windows padded by a linear ramp to zero)."""
    n = len(onset)
    half = win // 2
    padded = np.pad(onset.astype(np.float64), (half, half), mode="linear_ramp", end_values=(0, 0))
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    n_fft = spectral.next_fast_len(2 * win - 1)
    total = np.zeros(win)
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[:n]
    for first in range(0, n, TEMPOGRAM_BLOCK):
        block = frames[first : first + TEMPOGRAM_BLOCK] * window
        spectrum = spectral.rfft(block, n=n_fft, axis=1)
        ac = spectral.irfft(np.abs(spectrum) ** 2, n=n_fft, axis=1)[:, :win]
        peak = np.max(np.abs(ac), axis=1, keepdims=True)
        total += (ac / np.where(peak < np.finfo(np.float64).tiny, 1.0, peak)).sum(axis=0)
    return total / max(1, n)


def estimate_tempo(onset: np.ndarray, sr: int, hop: int) -> float:
    """Global tempo in BPM (``librosa.feature.tempo`` defaults: 8 s window, prior centred on
    120 BPM with one octave of spread, nothing at or above 320 BPM)."""
    win = int(np.floor(AC_SECONDS * sr / hop))
    tg = _mean_tempogram(onset, win)
    bpms = tempo_frequencies(win, sr, hop)
    with np.errstate(divide="ignore"):
        logprior = -0.5 * (np.log2(bpms) - np.log2(START_BPM)) ** 2
    logprior[: int(np.argmax(bpms < MAX_TEMPO))] = -np.inf
    return float(bpms[int(np.argmax(np.log1p(1e6 * tg) + logprior))])


def _local_score(onset: np.ndarray, period: float) -> np.ndarray:
    """The onset envelope divided by its standard deviation (in the envelope's float32) and
    smoothed by a Gaussian a beat period wide, summed in float64 in librosa's order (one
    product added at a time), so near-ties in the dynamic programme break the same way.
    librosa's loop skips the envelope's first frame; so does this."""
    onset = onset.astype(np.float32)
    norm = (onset / (onset.std(ddof=1) + np.finfo(np.float32).tiny)).astype(np.float64)
    n = len(norm)
    half = int(period)
    window = np.exp(-0.5 * (np.arange(-half, half + 1) * 32.0 / period) ** 2)
    # score[i] = sum over k of window[k] * norm[i + half - k], for 1 <= i + half - k < n.
    padded = np.zeros(n + 2 * half + 1)
    padded[half + 1 : half + n] = norm[1:]
    score = np.zeros(n)
    for k in range(len(window)):
        shift = 2 * half - k  # padded index of norm[i + half - k] is i + 2 * half - k
        score += window[k] * padded[shift : shift + n]
    return score


def _dynamic_programme(score: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Best cumulative score ending with a beat at each frame, and that beat's predecessor
    (-1 for none): predecessors lie ``round(period / 2)`` to ``2 * period`` frames back and
    pay ``TIGHTNESS * log(gap / period)**2``; on ties the nearest predecessor wins."""
    n = len(score)
    near = int(np.round(period / 2))
    gaps = np.arange(near, int(2 * period) + 1)
    penalty = -TIGHTNESS * (np.log(gaps) - np.log(period)) ** 2
    cumscore = np.empty(n)
    backlink = np.full(n, -1, dtype=np.int64)
    step = max(1, near)
    for first in range(0, n, step):
        idx = np.arange(first, min(n, first + step))
        loc = idx[:, None] - gaps[None, :]
        candidates = np.where(loc >= 0, cumscore[np.maximum(loc, 0)] + penalty, -np.inf)
        best = np.argmax(candidates, axis=1)
        best_score = candidates[np.arange(len(idx)), best]
        found = np.isfinite(best_score)
        cumscore[idx] = score[idx] + np.where(found, best_score, 0.0)
        backlink[idx] = np.where(found, loc[np.arange(len(idx)), best], -1)
    # Until the first frame scoring 1 % of the maximum, no beat has a predecessor.
    strong = np.flatnonzero(score >= 0.01 * score.max())
    backlink[: strong[0] if len(strong) else n] = -1
    return backlink, cumscore


def _last_beat(cumscore: np.ndarray) -> int:
    """The last local maximum of the cumulative score reaching half the median maximum."""
    prev = np.concatenate(([cumscore[0]], cumscore[:-1]))
    nxt = np.concatenate((cumscore[1:], [cumscore[-1]]))
    peaks = (cumscore > prev) & (cumscore >= nxt)
    if not peaks.any():
        return len(cumscore) - 1
    threshold = 0.5 * np.median(cumscore[peaks])
    ok = np.flatnonzero(peaks & (cumscore >= threshold))
    return int(ok[-1]) if len(ok) else len(cumscore) - 1


def _trim(score: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Drop leading and trailing beats whose local score is at most half the RMS of the
    Hann-smoothed scores at the beats."""
    smooth = np.convolve(score[beats].astype(np.float64), np.hanning(5))[2 : len(score) + 2]
    threshold = 0.5 * np.sqrt(np.mean(smooth**2)) if len(smooth) else 0.0
    above = np.flatnonzero(score > threshold)
    if not len(above):
        return np.zeros_like(beats)
    out = beats.copy()
    out[: above[0]] = False
    out[above[-1] + 1 :] = False
    return out


def track_beats(onset: np.ndarray, sr: int, hop: int) -> tuple[float, np.ndarray]:
    """Tempo (BPM) and beat frames of an onset envelope, as ``librosa.beat.beat_track(
    onset_envelope=onset, sr=sr, hop_length=hop)``: (0.0, no beats) for an envelope without
    onsets or a constant one (librosa divides by its zero deviation there and then reads past
    the envelope's end; there is no beat to find)."""
    onset = np.asarray(onset, dtype=np.float32)
    if len(onset) < 2 or not onset.any() or not onset.std() > 0:
        return 0.0, np.zeros(0, dtype=np.int64)
    bpm = estimate_tempo(onset.astype(np.float64), sr, hop)
    period = float(np.round(sr / hop * 60.0 / bpm))
    score = _local_score(onset, period)
    backlink, cumscore = _dynamic_programme(score, period)
    beats = np.zeros(len(onset), dtype=bool)
    n = _last_beat(cumscore)
    while n >= 0:
        beats[n] = True
        n = int(backlink[n])
    return bpm, np.flatnonzero(_trim(score, beats))
