"""Per-shot audio features, named exactly as the contract's ``audio_features``.

All spectral features come from one magnitude STFT (n_fft 2048, hop 512) of the shot's slice of
the mono track, so a shot costs one STFT; they are computed with numpy
(``client.media.spectral``, ``client.media.beats``), reproducing librosa 0.11's definitions
(the unit tests compare with librosa itself), without librosa's numba JIT on the run path.
Speech comes from silero-vad (``client.media.speech``), loudness from pyloudnorm's K-weighting
(``client.media.loudness``). Values are always finite: silence gives zeros (and MFCCs of the
-100 dB floor), never NaN, because JSON cannot carry NaN and the server rejects it; measures
that do not exist for a shot (tempo of silence, loudness range under 3 s) are None.

``music_ratio`` (share of the window judged music) is decided per STFT frame (23 ms) by a rule
on frames this module already has; a frame is music when all three hold:

1. *sounding*: its RMS is at least ``MUSIC_GATE_RMS`` (-50 dBFS), so room tone and near
   silence are not music;
2. *not speech*: its centre lies outside every silero-vad speech segment (so ``music_ratio``
   needs speech detection: without it the field is absent, never guessed);
3. *tonal or rhythmic*. Tonal: the pitch-class profile is concentrated and steady, i.e. over
   the ``TONAL_WINDOW_FRAMES`` (1 s) around the frame, the frames' chroma vectors (each
   divided by its sum, minus the flat 1/12) keep pointing the same way: the length of their
   mean is at least ``TONAL_MIN_CONSISTENCY`` of their mean length (held notes and chords
   give about 1; noise, whose chroma is flat with random wiggles, and the shifting pitch of
   speech give less); and the frame's spectral flatness (geometric over arithmetic mean of the
   power from 60 Hz to 8 kHz) is at most ``TONAL_MAX_FLATNESS`` (white noise is about 0.56).
   Rhythmic: the shot has a beat track whose beats carry at least
   ``RHYTHM_MIN_BEAT_STRENGTH`` times the shot's mean onset strength (the tracker places beats
   on onsets, so speech reaches about 2.8 and music with a beat 4 or more); then every
   sounding non-speech frame of the shot is music (drums, percussive loops).

The ratio is the share of frames that are music; frames are evenly spaced, so it is the share
of the window's duration. The thresholds were set on the shared test media (speech, jazz, whale
song, two film excerpts): tonal animal song such as the humpback recording counts as music by
this rule, which hears pitch and pulse, not intent.

Start-up cost is small (no scipy is imported; the filter banks, onnxruntime and the VAD
session, the K-weighting FIR): ``warm_up_in_background`` still runs a tiny extraction in a
thread at start so it overlaps with opening and decoding the film instead of delaying the first
shot.

The warm-up thread is *not* a daemon and must never outlive the command: a thread still inside
native code (onnxruntime, BLAS, and formerly numba/llvmlite) when the interpreter exits makes
the process abort with ``terminate called without an active exception`` (exit 134) after the
results were written. It runs in short steps and checks a stop flag between them;
``stop_warm_up`` (called by the CLI on every exit path) sets the flag and joins the thread, so
at most one step is waited for.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from client.media import spectral
from client.media.background_job import BackgroundJob
from client.media.beats import onset_strength, track_beats
from client.media.loudness import measure_loudness
from client.media.speech import Speech, SpeechUnavailable, detect_speech

log = logging.getLogger("client.media.features")

N_FFT = spectral.N_FFT
HOP = spectral.HOP
N_MFCC = 13
# Below this RMS (about -70 dBFS) a shot is treated as silent: no tempo is reported.
SILENCE_RMS = 3e-4
# Fewer than about four beats at 120 BPM: the tracker's tempo is not meaningful.
TEMPO_MIN_SECONDS = 2.0
MAX_BEAT_TIMES = 512  # the first ones are kept (the contract's limit)
MUSIC_GATE_RMS = 10 ** (-50 / 20)
TONAL_WINDOW_FRAMES = 43  # 1 s at 22050 Hz / hop 512
TONAL_MIN_CONSISTENCY = 0.7
TONAL_MAX_FLATNESS = 0.3
RHYTHM_MIN_BEAT_STRENGTH = 3.5
FLATNESS_BAND_HZ = (60.0, 8000.0)

_blas_lock = threading.Lock()
_blas_limited = False


def limit_blas_threads() -> None:
    """Run BLAS (numpy's OpenBLAS) on one thread in this process, once.

    The features' matrix products are small (a shot's spectrogram times a filter bank) and run
    on several worker threads next to the decoder: OpenBLAS's own threads then only wait for
    each other and for the decoder. Measured on the 2-core test machine: a 5 s shot's mel and
    chroma products took 11 ms with 2 BLAS threads and 0.6 ms with one; the whole feature set
    87 ms and 21 ms. Uses threadpoolctl when installed (it comes with scikit-learn, which
    librosa needs); without it nothing changes.
    """
    global _blas_limited
    with _blas_lock:
        if _blas_limited:
            return
        _blas_limited = True
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl is optional
            log.debug("threadpoolctl not installed: BLAS keeps its default threads")
            return
        threadpool_limits(limits=1, user_api="blas")


_warm_job = BackgroundJob("audio-warm-up")
_warm_done = threading.Event()  # the whole warm-up ran once: no need to run it again


def _finite(value: float | np.floating) -> float:
    v = float(value)
    return round(v, 6) if np.isfinite(v) else 0.0


def _finite_list(values: np.ndarray) -> list[float]:
    return [_finite(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _beats(
    onset: np.ndarray, sr: int, duration: float, sounding: bool, tempo_min_seconds: float
) -> tuple[float | None, np.ndarray, float]:
    """Tempo (None when silent, too short or without onsets), beat frames, and beat strength
    (mean onset at the beats over the mean onset; 0 without beats)."""
    if duration < tempo_min_seconds or not sounding:
        return None, np.zeros(0, np.int64), 0.0
    bpm, frames = track_beats(onset, sr, HOP)
    if not (np.isfinite(bpm) and bpm > 0) or not len(frames):
        return None, np.zeros(0, np.int64), 0.0
    mean = float(onset.mean())
    strength = float(onset[frames].mean()) / mean if mean > 0 else 0.0
    return _finite(bpm), frames, strength


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving mean along axis 0 (the window shrinks at the ends)."""
    n = len(x)
    csum = np.concatenate((np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)))
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) + width - width // 2, 0, n)
    count = (hi - lo).reshape(-1, *([1] * (x.ndim - 1)))
    return (csum[hi] - csum[lo]) / count


def chroma_consistency(chroma_energy: np.ndarray) -> np.ndarray:
    """Per frame: length of the mean over ``TONAL_WINDOW_FRAMES`` of the centred, sum-normalised
    chroma vectors, over their mean length (1: a steady pitch-class profile; 0 for silence)."""
    total = chroma_energy.sum(axis=1, keepdims=True, dtype=np.float64)
    centred = chroma_energy / np.maximum(total, 1e-30) - 1.0 / chroma_energy.shape[1]
    centred[total[:, 0] <= 0] = 0.0
    lengths = np.linalg.norm(centred, axis=1)
    mean_vector = _moving_mean(centred, TONAL_WINDOW_FRAMES)
    mean_length = _moving_mean(lengths, TONAL_WINDOW_FRAMES)
    return np.linalg.norm(mean_vector, axis=1) / np.maximum(mean_length, 1e-12)


def music_frames(
    power: np.ndarray,
    chroma_energy: np.ndarray,
    rms: np.ndarray,
    sr: int,
    speech: Speech,
    rhythmic: bool,
) -> np.ndarray:
    """Which STFT frames are music by the rule of the module doc (boolean per frame); the
    spectra are frames-major (frames, bins)."""
    freqs = spectral.fft_frequencies(sr, N_FFT)
    band = (freqs >= FLATNESS_BAND_HZ[0]) & (freqs <= FLATNESS_BAND_HZ[1])
    p = np.maximum(power[:, band], spectral.AMIN)
    flatness = np.exp(np.mean(np.log(p), axis=1, dtype=np.float64)) / np.mean(
        p, axis=1, dtype=np.float64
    )
    tonal = (chroma_consistency(chroma_energy) >= TONAL_MIN_CONSISTENCY) & (
        flatness <= TONAL_MAX_FLATNESS
    )
    sounding = rms >= MUSIC_GATE_RMS
    times = np.arange(len(rms)) * HOP / sr
    talking = np.zeros(len(rms), dtype=bool)
    for start, end in speech.segments:
        talking |= (times >= start) & (times < end)
    return sounding & ~talking & (tonal | rhythmic)


def compute_features(
    y: np.ndarray,
    sr: int,
    tempo_min_seconds: float = TEMPO_MIN_SECONDS,
    speech: Speech | None = None,
) -> dict[str, Any]:
    """Audio features of a mono float signal (one shot window).

    Returns the contract's fields: ``mfcc_mean``/``mfcc_std`` (13 each), spectral
    ``centroid``/``rolloff`` (85 %)/``bandwidth`` means in Hz, ``zero_crossing_rate_mean``,
    ``rms_energy_mean``/``std``, ``chroma_mean`` (12), ``tempo`` (BPM) and ``beat_times``
    (seconds from the start, at most 512) for shots of at least ``tempo_min_seconds`` that are
    not silent (else None and []), ``loudness_lufs``/``loudness_range_lu`` (None where not
    defined) and, when ``speech`` (the shot's silero-vad result) is given, ``speech_ratio``,
    ``speech_segments`` and ``music_ratio``. Signals shorter than one FFT window are
    zero-padded to it for the spectral features.
    """
    limit_blas_threads()
    y = np.nan_to_num(np.asarray(y, dtype=np.float32))
    duration = len(y) / sr
    loudness = measure_loudness(y, sr)
    if len(y) < N_FFT:
        y = np.pad(y, (0, N_FFT - len(y)))
    mag = spectral.stft_magnitude(y)  # (frames, bins)
    power = mag**2
    freqs = spectral.fft_frequencies(sr).astype(np.float32)
    # Spectral moments as matrix-vector products: centroid = sum(f S) / sum(S) and
    # bandwidth**2 = sum(f**2 S) / sum(S) - centroid**2 (librosa's definitions, p = 2).
    total = mag.sum(axis=1, dtype=np.float64)
    safe = np.where(total < np.finfo(np.float32).tiny, 1.0, total)
    centroid = (mag @ freqs).astype(np.float64) / safe
    second = (mag @ (freqs * freqs)).astype(np.float64) / safe
    bandwidth = np.sqrt(np.maximum(0.0, second - centroid**2))
    cumulative = np.cumsum(mag, axis=1)
    # First bin whose cumulative magnitude reaches 85 % of the frame's total (0 Hz if silent).
    rolloff = freqs[np.argmax(cumulative >= 0.85 * cumulative[:, -1:], axis=1)]
    zcr = spectral.frame_zero_crossing_rate(y)
    rms = spectral.frame_rms(y)
    mel_db = spectral.power_to_db(power @ spectral.mel_filter_bank(sr).T)
    mfcc = spectral.mfcc(mel_db, N_MFCC)
    chroma_energy = power @ spectral.chroma_filter_bank(sr).T
    chroma = spectral.normalize_rows(chroma_energy)
    rms_mean = float(np.mean(rms))
    onset = onset_strength(mel_db, N_FFT, HOP)
    tempo, beat_frames, beat_strength = _beats(
        onset, sr, duration, rms_mean >= SILENCE_RMS, tempo_min_seconds
    )
    beat_times = [t for t in (beat_frames * HOP / sr).tolist() if t <= duration]
    out: dict[str, Any] = {
        "mfcc_mean": _finite_list(mfcc.mean(axis=0)),
        "mfcc_std": _finite_list(mfcc.std(axis=0)),
        "spectral_centroid_mean": max(0.0, _finite(np.mean(centroid))),
        "spectral_rolloff_mean": max(0.0, _finite(np.mean(rolloff))),
        "spectral_bandwidth_mean": max(0.0, _finite(np.mean(bandwidth))),
        "zero_crossing_rate_mean": min(1.0, max(0.0, _finite(np.mean(zcr)))),
        "rms_energy_mean": max(0.0, _finite(rms_mean)),
        "rms_energy_std": max(0.0, _finite(np.std(rms))),
        "chroma_mean": [max(0.0, v) for v in _finite_list(chroma.mean(axis=0))],
        "tempo": tempo,
        "beat_times": [round(t, 4) for t in beat_times[:MAX_BEAT_TIMES]],
        **loudness,
    }
    if speech is not None:
        out.update(speech.as_fields())
        music = music_frames(
            power, chroma_energy, rms, sr, speech, beat_strength >= RHYTHM_MIN_BEAT_STRENGTH
        )
        # Frames past the real end (zero padding of a very short window) are not music.
        real = min(len(music), 1 + int(duration * sr) // HOP) if duration > 0 else 0
        out["music_ratio"] = round(float(music[:real].mean()), 4) if real else 0.0
    return out


def shot_audio_features(
    y: np.ndarray, sr: int, tempo_min_seconds: float, speech: bool = True
) -> tuple[dict[str, Any], str | None]:
    """A shot's features with speech detection (when ``speech``), and why speech is missing
    (``speech_error``, None when it was measured or not asked for)."""
    found: Speech | None = None
    error: str | None = None
    if speech:
        try:
            found = detect_speech(y, sr)
        except SpeechUnavailable as exc:
            error = str(exc)
    return compute_features(y, sr, tempo_min_seconds, speech=found), error


def _warm_up_steps(sr: int = 22050) -> list[Callable[[], object]]:
    """The warm-up as short steps (filter banks, the VAD session, the K-weighting FIR, the
    feature path without and with beats), each touching code a real shot will run."""
    rng = np.random.default_rng(0)
    short = rng.uniform(-0.1, 0.1, sr // 2).astype(np.float32)
    long = rng.uniform(-0.1, 0.1, sr * 4).astype(np.float32)

    def _speech() -> object:
        try:
            return detect_speech(short, sr)
        except SpeechUnavailable:  # warned once by the speech module; shots record the error
            return None

    return [
        limit_blas_threads,
        lambda: (spectral.mel_filter_bank(sr), spectral.chroma_filter_bank(sr)),
        _speech,
        lambda: measure_loudness(short, sr),
        lambda: compute_features(short, sr, tempo_min_seconds=math.inf),
        lambda: compute_features(long, sr, tempo_min_seconds=TEMPO_MIN_SECONDS),
    ]


def _warm_up(stop: threading.Event) -> None:
    try:
        for step in _warm_up_steps():
            if stop.is_set():
                return
            step()
        _warm_done.set()
    except Exception:  # pragma: no cover - a failed warm-up only costs time later
        log.debug("audio feature warm-up failed", exc_info=True)


def warm_up_in_background() -> threading.Thread | None:
    """Start (once per process) the thread that loads the audio feature code (filter banks,
    the VAD model, the K-weighting FIR) ahead of the first shot.

    The thread is joined by ``stop_warm_up``; callers that start it must call that before the
    process exits (see the module doc for why). Returns the running thread, or None when the
    warm-up already ran to the end in this process.
    """
    if _warm_done.is_set():
        return None
    return _warm_job.start(_warm_up)


def stop_warm_up() -> None:
    """Ask the warm-up to stop after its current step and wait for it (idempotent, cheap
    when no warm-up was started). After it returns no warm-up thread is running."""
    _warm_job.stop()
