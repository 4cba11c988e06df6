#!/usr/bin/env python3
"""Benchmark the per-shot audio features: what they say and what they cost, before and after.

For each recording (by default the three shared ones: speech, music, whale song), decoded once by
the client's own audio path (``AudioTrack``, mono 22050 Hz), it prints side by side:

- the issue-15 values: ``speech_ratio``, ``music_ratio``, ``tempo`` and beat count,
  ``loudness_lufs``, ``loudness_range_lu``;
- the cost in milliseconds per minute of audio (best of ``--repeat``), with the recording cut
  into ``--shot`` second shots as a run would (and as one window):
  * ``vad``: silero-vad (resample to 16 kHz, the model, post-processing) with the model the
    client uses (the sequence export when present) and with the streaming ``silero_vad.onnx``;
  * ``before``: the pre-issue-15 librosa features (STFT, MFCC, chroma, tempo; no beats, speech
    or loudness), warm (imports and numba JIT already paid), measured first, with BLAS on its
    default threads as the old client ran; ``before-1t`` the same with BLAS on one thread (the
    client's setting now), to separate the port's gain from the threading fix;
  * ``after``: ``shot_audio_features``, everything (speech, beats, loudness, music) and
    ``after -speech`` without the VAD.

Then the one-off cost per process, each measured in a fresh subprocess: librosa's path (import,
then the first feature call with tempo, then ``librosa.beat``'s import, which compiles numba
kernels) with an empty ``NUMBA_CACHE_DIR`` (a fresh machine) and again with the cache that run
wrote, against the client's path (import and first ``shot_audio_features``, no JIT).

    python scripts/bench_audio.py                 # the shared recordings
    python scripts/bench_audio.py --repeat 3 --shot 5 FILE [FILE ...]
    python scripts/bench_audio.py --no-cold       # skip the fresh-cache subprocesses (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client.media import speech  # noqa: E402
from client.media.audio import AudioTrack  # noqa: E402
from client.media.features import compute_features, shot_audio_features  # noqa: E402
from client.options import AudioOptions  # noqa: E402

SR = 22050
SHARED = REPO.parent / "shared" / "media"
DEFAULT_FILES = ["speech_jfk_11s.flac", "music_vibe_ace.ogg", "ambience_humpback.ogg"]

# Per-process start-up, in a fresh interpreter: prints the seconds of each step as JSON.
LIBROSA_START = """
import json, time, numpy as np, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import librosa
t1 = time.perf_counter()
y = np.random.default_rng(0).uniform(-0.1, 0.1, 22050 * 4).astype(np.float32)
mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
mel_db = librosa.power_to_db(librosa.filters.mel(sr=22050, n_fft=2048) @ mag**2)
librosa.feature.mfcc(S=mel_db, n_mfcc=13)
librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
onset = librosa.onset.onset_strength(S=mel_db, sr=22050, hop_length=512)
librosa.feature.tempo(onset_envelope=onset, sr=22050, hop_length=512)
t2 = time.perf_counter()
import librosa.beat
librosa.beat.beat_track(onset_envelope=onset, sr=22050, hop_length=512)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_features": t2 - t1, "beat_import_and_call": t3 - t2,
                  "total": t3 - t0}))
"""
CLIENT_START = """
import json, time, numpy as np
t0 = time.perf_counter()
from client.media.features import shot_audio_features
t1 = time.perf_counter()
y = np.random.default_rng(0).uniform(-0.1, 0.1, 22050 * 4).astype(np.float32)
shot_audio_features(y, 22050, 2.0)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_features": t2 - t1, "total": t2 - t0}))
"""


def decode(path: Path) -> np.ndarray:
    """The whole recording, mono at SR, through the client's decoder."""
    track = AudioTrack(path, AudioOptions(sample_rate=SR)).start()
    try:
        track.advance_video(float("inf"))
        y = track.slice(0.0, 24 * 3600.0)
        return y[: int(round(track.held_seconds * SR))]
    finally:
        track.close()


def librosa_features(y: np.ndarray, sr: int) -> None:
    """The pre-issue-15 ``compute_features`` body (librosa), for the 'before' column."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(y) < 2048:
            y = np.pad(y, (0, 2048 - len(y)))
        mag = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
        power = mag**2
        centroid = librosa.feature.spectral_centroid(S=mag, sr=sr)
        librosa.feature.spectral_rolloff(S=mag, sr=sr, roll_percent=0.85)
        librosa.feature.spectral_bandwidth(S=mag, sr=sr, centroid=centroid)
        librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
        rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=512)
        mel_db = librosa.power_to_db(_librosa_banks(sr)[0] @ power)
        librosa.feature.mfcc(S=mel_db, n_mfcc=13)
        librosa.util.normalize(_librosa_banks(sr)[1] @ power, norm=np.inf, axis=-2)
        if len(y) >= 3 * sr and float(np.mean(rms)) >= 3e-4:
            onset = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=512)
            librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=512)


_BANKS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _librosa_banks(sr: int) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    if sr not in _BANKS:  # built once per process, as the old code did
        _BANKS[sr] = (
            librosa.filters.mel(sr=sr, n_fft=2048).astype(np.float32),
            librosa.filters.chroma(sr=sr, n_fft=2048, tuning=0.0).astype(np.float32),
        )
    return _BANKS[sr]


def vad(y: np.ndarray, model: object) -> None:
    """Speech detection of one window with a given model (as ``detect_speech`` does)."""
    audio16 = speech.to_vad_rate(y, SR)
    probs = speech.speech_probabilities(audio16, model)  # type: ignore[arg-type]
    speech.speech_timestamps(probs, len(audio16))


def ms_per_minute(
    fn: Callable[[np.ndarray], object], shots: list[np.ndarray], repeat: int
) -> float:
    """Best-of-``repeat`` milliseconds to run ``fn`` on every shot, per minute of audio."""
    seconds = sum(len(s) for s in shots) / SR
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for s in shots:
            fn(s)
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / (seconds / 60)


def start_up(code: str, cache_dir: str) -> dict[str, float]:
    """Run a start-up snippet in a fresh interpreter with a given numba cache folder."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"start-up run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "files", nargs="*", type=Path, help="recordings (default: the shared three)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--shot", type=float, default=5.0, help="shot length in seconds")
    parser.add_argument("--no-cold", action="store_true", help="skip the start-up subprocesses")
    args = parser.parse_args(argv)
    files = args.files or [SHARED / name for name in DEFAULT_FILES]

    step = int(args.shot * SR)
    recordings = {}
    for path in files:
        y = decode(path)
        shots = [y[i : i + step] for i in range(0, len(y), step)]
        recordings[path] = (y, [s for s in shots if len(s) >= SR // 2] or [y])
    warm = np.random.default_rng(0).uniform(-0.1, 0.1, SR * 4).astype(np.float32)
    # 'before' first, as the old client ran: BLAS with its default threads (the client now
    # limits BLAS to one thread on its first shot, see features.limit_blas_threads).
    librosa_features(warm, SR)  # librosa's imports and JIT are paid before timing
    before = {
        path: ms_per_minute(lambda s: librosa_features(s, SR), shots, args.repeat)
        for path, (_, shots) in recordings.items()
    }
    used = speech.model()
    streaming_path = speech.model_path(prefer_sequence=False)
    streaming = speech.load_model(streaming_path) if streaming_path is not None else None
    shot_audio_features(warm, SR, 2.0)
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; VAD model: "
        f"{'sequence' if used.sequence else 'streaming'}; shots of {args.shot:g} s"
    )
    header = (
        f"{'file':24} {'sec':>5} {'speech':>6} {'music':>6} {'tempo':>6} {'beats':>5} "
        f"{'LUFS':>6} {'LRA':>5} | ms per audio minute: {'vad':>5} {'vad-str':>7} "
        f"{'before':>6} {'before-1t':>9} {'after':>6} {'after-speech':>12}"
    )
    print(header)
    for path, (y, shots) in recordings.items():
        feats, error = shot_audio_features(y, SR, 2.0)
        cost = {
            "vad": ms_per_minute(lambda s: vad(s, used), shots, args.repeat),
            "vad-str": (
                ms_per_minute(lambda s: vad(s, streaming), shots, args.repeat)
                if streaming is not None
                else float("nan")
            ),
            "before": before[path],
            "before-1t": ms_per_minute(lambda s: librosa_features(s, SR), shots, args.repeat),
            "after": ms_per_minute(lambda s: shot_audio_features(s, SR, 2.0), shots, args.repeat),
            "after-speech": ms_per_minute(
                lambda s: compute_features(s, SR, 2.0), shots, args.repeat
            ),
        }
        values = {k: feats.get(k) for k in feats}

        def fmt(key: str, width: int, spec: str = ".2f", values: dict = values) -> str:
            value = values.get(key)
            return f"{'-' if value is None else format(value, spec):>{width}}"

        print(
            f"{path.name[:24]:24} {len(y) / SR:5.1f} {fmt('speech_ratio', 6)} "
            f"{fmt('music_ratio', 6)} {fmt('tempo', 6, '.1f')} {len(feats['beat_times']):5d} "
            f"{fmt('loudness_lufs', 6, '.1f')} {fmt('loudness_range_lu', 5, '.1f')} | "
            f"{'':21}{cost['vad']:5.0f} {cost['vad-str']:7.0f} {cost['before']:6.0f} "
            f"{cost['before-1t']:9.0f} "
            f"{cost['after']:6.0f} {cost['after-speech']:12.0f}"
            + (f"  speech_error: {error}" if error else "")
        )

    if not args.no_cold:
        print("\nper-process start-up, seconds (fresh interpreter each):")
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            cold = start_up(LIBROSA_START, cache)
            warm_run = start_up(LIBROSA_START, cache)
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            client = start_up(CLIENT_START, cache)
        for label, row in (
            ("librosa, empty NUMBA_CACHE_DIR", cold),
            ("librosa, warm NUMBA_CACHE_DIR", warm_run),
            ("client (numpy/scipy/onnx)", client),
        ):
            parts = "  ".join(f"{k} {v:6.2f}" for k, v in row.items())
            print(f"  {label:32} {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
