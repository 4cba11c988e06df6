"""Per-shot audio features with librosa, named exactly as the contract's ``audio_features``.

All spectral features come from one magnitude STFT (n_fft 2048, hop 512) of the shot's slice of
the mono track, so a shot costs one STFT. Values are always finite: silence gives zeros (and
MFCCs of the -100 dB floor), never NaN, because JSON cannot carry NaN and the server rejects it.

librosa compiles some helpers with numba on first use (tens of seconds on a cold cache, then
cached on disk by numba); ``warm_up_in_background`` runs a tiny extraction in a thread at start
so that cost overlaps with opening and decoding the film instead of stalling the first shot.

The warm-up thread is *not* a daemon and must never outlive the command: a thread still inside
numba/llvmlite (LLVM, C++) or BLAS when the interpreter exits makes the process abort with
``terminate called without an active exception`` (exit 134) after the results were written.
It runs in short steps and checks a stop flag between them; ``stop_warm_up`` (called by the CLI
on every exit path) sets the flag and joins the thread, so at most one step is waited for.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger("client.media.features")

N_FFT = 2048
HOP = 512
N_MFCC = 13
# Below this RMS (about -70 dBFS) a shot is treated as silent: no tempo is reported.
SILENCE_RMS = 3e-4

_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None
_warm_stop = threading.Event()
_warm_done = threading.Event()  # the whole warm-up ran once: no need to run it again


@functools.lru_cache(maxsize=4)
def _filter_banks(sr: int) -> tuple[np.ndarray, np.ndarray]:
    """librosa's mel (128 bands) and chroma (12 bins, A440) filter banks for N_FFT at ``sr``."""
    import librosa

    mel = librosa.filters.mel(sr=sr, n_fft=N_FFT)
    chroma = librosa.filters.chroma(sr=sr, n_fft=N_FFT, tuning=0.0)
    return mel.astype(np.float32), chroma.astype(np.float32)


def _finite(value: float) -> float:
    v = float(value)
    return round(v, 6) if np.isfinite(v) else 0.0


def _finite_list(values: np.ndarray) -> list[float]:
    return [_finite(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def compute_features(y: np.ndarray, sr: int, tempo_min_seconds: float = 3.0) -> dict[str, Any]:
    """librosa features of a mono float signal (one shot).

    Returns the contract's fields: ``mfcc_mean``/``mfcc_std`` (13 each), spectral
    ``centroid``/``rolloff`` (85 %)/``bandwidth`` means in Hz, ``zero_crossing_rate_mean``,
    ``rms_energy_mean``/``std`` and ``chroma_mean`` (12), plus ``tempo`` (BPM) for shots of at
    least ``tempo_min_seconds`` that are not silent, else None. Signals shorter than one FFT
    window are zero-padded to it.
    """
    import librosa  # deferred: importing librosa costs ~0.3 s and the shots path may not need it

    y = np.asarray(y, dtype=np.float32)
    duration = len(y) / sr
    if len(y) < N_FFT:
        y = np.pad(y, (0, N_FFT - len(y)))
    y = np.nan_to_num(y, copy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about short or silent input
        mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
        power = mag**2
        centroid = librosa.feature.spectral_centroid(S=mag, sr=sr)
        rolloff = librosa.feature.spectral_rolloff(S=mag, sr=sr, roll_percent=0.85)
        bandwidth = librosa.feature.spectral_bandwidth(S=mag, sr=sr, centroid=centroid)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)
        rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP)
        # Same as librosa.feature.melspectrogram / chroma_stft(tuning=0) but with the filter
        # banks built once per process instead of once per shot (they cost more than the STFT).
        mel_fb, chroma_fb = _filter_banks(sr)
        mel_db = librosa.power_to_db(mel_fb @ power)
        mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
        # tuning=0: no per-shot tuning estimation (slow, and unstable on short shots).
        chroma = librosa.util.normalize(chroma_fb @ power, norm=np.inf, axis=-2)
        rms_mean = float(np.mean(rms))
        tempo: float | None = None
        if duration >= tempo_min_seconds and rms_mean >= SILENCE_RMS:
            onset = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=HOP)
            bpm = float(
                np.ravel(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=HOP))[0]
            )
            tempo = _finite(bpm) if np.isfinite(bpm) and bpm > 0 else None
    return {
        "mfcc_mean": _finite_list(mfcc.mean(axis=1)),
        "mfcc_std": _finite_list(mfcc.std(axis=1)),
        "spectral_centroid_mean": max(0.0, _finite(np.mean(centroid))),
        "spectral_rolloff_mean": max(0.0, _finite(np.mean(rolloff))),
        "spectral_bandwidth_mean": max(0.0, _finite(np.mean(bandwidth))),
        "zero_crossing_rate_mean": min(1.0, max(0.0, _finite(np.mean(zcr)))),
        "rms_energy_mean": max(0.0, _finite(rms_mean)),
        "rms_energy_std": max(0.0, _finite(np.std(rms))),
        "chroma_mean": [max(0.0, v) for v in _finite_list(chroma.mean(axis=1))],
        "tempo": tempo,
    }


def _warm_up_steps() -> list[Callable[[], object]]:
    """The warm-up as short steps (imports, filter banks, the feature path without and with
    tempo), each touching the librosa code a real shot will run."""
    sr = 22050
    rng = np.random.default_rng(0)
    short = rng.uniform(-0.1, 0.1, sr // 2).astype(np.float32)
    long = rng.uniform(-0.1, 0.1, sr * 4).astype(np.float32)

    def _import() -> object:
        import librosa

        return librosa

    return [
        _import,
        lambda: _filter_banks(sr),
        lambda: compute_features(short, sr, tempo_min_seconds=math.inf),
        lambda: compute_features(long, sr, tempo_min_seconds=3.0),
    ]


def _warm_up(stop: threading.Event) -> None:
    try:
        for step in _warm_up_steps():
            if stop.is_set():
                return
            step()
        _warm_done.set()
    except Exception:  # pragma: no cover - a failed warm-up only costs time later
        log.debug("librosa warm-up failed", exc_info=True)


def warm_up_in_background() -> threading.Thread | None:
    """Start (once per process) the thread that triggers librosa's imports and numba JIT.

    The thread is joined by ``stop_warm_up``; callers that start it must call that before the
    process exits (see the module doc for why). Returns the running thread, or None when the
    warm-up already ran to the end in this process.
    """
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None and not _warm_done.is_set():
            _warm_stop.clear()
            _warm_thread = threading.Thread(
                target=_warm_up, args=(_warm_stop,), name="librosa-warm-up", daemon=False
            )
            _warm_thread.start()
        return _warm_thread


def stop_warm_up() -> None:
    """Ask the warm-up to stop after its current step and wait for it (idempotent, cheap
    when no warm-up was started). After it returns no warm-up thread is running."""
    global _warm_thread
    with _warm_lock:
        thread = _warm_thread
        _warm_stop.set()
    if thread is not None:
        thread.join()
    with _warm_lock:
        if _warm_thread is thread:
            _warm_thread = None
