#!/usr/bin/env python3
"""Benchmark the client's extraction against the practical limit and the straightforward way.

For one film, in one run, it measures:

1. **pipeline**: the ``qwen-client shots`` path (one decode pass with shot detection, frame
   sampling, JPEG encoding, audio features, outputs written), no server;
2. **bare decode**: PyAV decoding every frame with ``thread_type="AUTO"`` and converting each to
   the small numpy array the pipeline needs per frame (the practical upper limit);
3. **straightforward**: PySceneDetect's ``detect()`` on the file (its own OpenCV decode), then an
   OpenCV seek (``CAP_PROP_POS_FRAMES``) to each sampled frame, then per shot the audio loaded
   for that shot alone (PyAV seek + decode + resample; librosa cannot read mp4 without ffmpeg)
   and its features.

It prints source frames/s and x real time for each, and the two ratios the client is judged on
(pipeline / bare decode, target >= 0.7; pipeline / straightforward, target >= 4). librosa's
one-off import/JIT is warmed before timing so no approach pays it.

    python scripts/bench_client.py FILM
    python scripts/bench_client.py --make-test-film 60            # 1080p H.264 film with cuts
    python scripts/bench_client.py --make-test-film 60 --repeat 2   # reuses the film made above
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from client.media.features import compute_features  # noqa: E402
from client.media.frames import FrameConverter, output_size, sample_positions  # noqa: E402
from client.media.probe import probe  # noqa: E402
from client.options import ExtractOptions  # noqa: E402
from client.pipeline.run import extract  # noqa: E402


@dataclass
class Result:
    """One approach's timing."""

    name: str
    frames: int
    seconds: float
    film_seconds: float
    note: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def realtime(self) -> float:
        return self.film_seconds / self.seconds if self.seconds else 0.0


def make_test_film(seconds: float, path: Path, seed: int = 1) -> Path:
    """A 1080p25 H.264 + AAC film with hard cuts every 1-6 s, film grain (a film-like bitrate)
    and a film-like 10 s keyframe interval."""
    from tests.film_factory import PATTERNS, ShotSpec, make_film

    rng = random.Random(seed)
    total = int(seconds * 25)
    shots = []
    while total > 0:
        frames = min(total, rng.randint(25, 150))
        shots.append(
            ShotSpec(
                frames=frames,
                brightness=rng.uniform(0.1, 0.9),
                pattern=rng.choice(PATTERNS[1:]),
                audio=rng.choice(["tone", "noise", "silence"]),
                tone_hz=rng.choice([220.0, 440.0, 880.0]),
                drift=rng.choice([0.5, 1.0, 2.0]),
            )
        )
        total -= frames
    t0 = time.perf_counter()
    truth = make_film(path, shots, size=(1920, 1080), gop=250, preset="veryfast", crf=20, grain=6)
    print(
        f"made {path}: {truth.frame_count} frames 1920x1080, {len(truth.cut_frames)} cuts, "
        f"{path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    return path


def bench_pipeline(film: Path) -> Result:
    info = probe(film)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = extract(info, Path(tmp) / "out", ExtractOptions(), progress=None, force=True)
        dt = time.perf_counter() - t0
    return Result(
        "pipeline (qwen-client shots)", report.frames, dt, report.duration, f"{report.shots} shots"
    )


def bench_bare_decode(film: Path, convert: bool = True) -> Result:
    info = probe(film)
    conv = FrameConverter(info.width, info.height, ExtractOptions().detection.detect_width)
    t0 = time.perf_counter()
    n = 0
    with av.open(str(film)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if convert:
                conv.detection_frame(frame)
            n += 1
    dt = time.perf_counter() - t0
    name = "bare PyAV decode + per-frame numpy" if convert else "bare PyAV decode only"
    return Result(name, n, dt, n / float(info.fps))


def _audio_for_shot(path: Path, start: float, end: float, sr: int) -> np.ndarray:
    """The straightforward way: open, seek and decode just this shot's audio."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        stream = container.streams.audio[0]
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        parts = []
        t_first = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > end:
                break
            if t_first is None:
                t_first = frame.time or 0.0
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        skip = max(0, int((start - (t_first or 0.0)) * sr))
        return y[skip : skip + int((end - start) * sr)]


def bench_naive(film: Path) -> Result:
    from scenedetect import AdaptiveDetector, detect

    info = probe(film)
    size = output_size(info.width, info.height, 448, 28)
    t0 = time.perf_counter()
    scenes = detect(str(film), AdaptiveDetector())
    if not scenes:
        scenes = [(None, None)]
    cap = cv2.VideoCapture(str(film))
    frames_total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    bounds = [
        (s.frame_num, e.frame_num - 1) if s is not None else (0, frames_total - 1)
        for s, e in scenes
    ]
    for first, last in bounds:
        for f in sample_positions(first, last, 5):
            cap.set(cv2.CAP_PROP_POS_FRAMES, f)
            ok, img = cap.read()
            if ok:
                small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cap.release()
    for first, last in bounds:
        start, end = first / float(info.fps), (last + 1) / float(info.fps)
        y = _audio_for_shot(film, start, end, 22050)
        compute_features(y, 22050)
    dt = time.perf_counter() - t0
    n = bounds[-1][1] + 1
    return Result(
        "straightforward (detect + seeks + per-shot audio)",
        n,
        dt,
        n / float(info.fps),
        f"{len(bounds)} shots",
    )


def main(argv: list[str] | None = None) -> int:
    # Over 60 lines on purpose: argument parsing, then one linear measure-and-print script whose
    # steps read in order; split up, the printed comparison would be scattered over helpers.
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("film", nargs="?", type=Path, help="film to benchmark")
    parser.add_argument(
        "--make-test-film",
        type=float,
        metavar="SECONDS",
        help="generate a 1080p H.264 film with cuts of this length and use it",
    )
    parser.add_argument("--film-out", type=Path, help="where to write the generated film")
    parser.add_argument(
        "--skip-naive", action="store_true", help="skip the straightforward approach"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each approach N times and keep the fastest (less noise from other processes)",
    )
    args = parser.parse_args(argv)
    film = args.film
    if args.make_test_film:
        out = (
            args.film_out
            or Path(tempfile.gettempdir()) / f"bench_1080p_{args.make_test_film:g}s.mp4"
        )
        film = (
            out if out.exists() and not args.film_out else make_test_film(args.make_test_film, out)
        )
    if film is None:
        parser.error("give a FILM or --make-test-film SECONDS")
    info = probe(film)
    print(
        f"film: {film} ({info.width}x{info.height} {info.codec} {float(info.fps):g} fps, "
        f"{info.duration or 0:.1f} s, audio: {info.audio_codec})"
    )
    compute_features(np.zeros(22050 * 4, np.float32), 22050)  # warm librosa for everyone

    def best(fn: Callable[..., Result], *fn_args: object) -> Result:
        return min((fn(*fn_args) for _ in range(max(1, args.repeat))), key=lambda r: r.seconds)

    results = [
        best(bench_bare_decode, film, False),
        best(bench_bare_decode, film),
        best(bench_pipeline, film),
    ]
    if not args.skip_naive:
        results.append(best(bench_naive, film))
    print(f"\n{'approach':<52} {'frames':>7} {'seconds':>8} {'frames/s':>9} {'x real time':>12}")
    for r in results:
        print(
            f"{r.name:<52} {r.frames:>7} {r.seconds:>8.2f} {r.fps:>9.1f} {r.realtime:>11.1f}x"
            + (f"  ({r.note})" if r.note else "")
        )
    bare, pipe = results[1], results[2]
    print(f"\npipeline / bare decode:       {pipe.fps / bare.fps:.2f}  (target >= 0.70)")
    if not args.skip_naive:
        naive = results[3]
        print(f"pipeline / straightforward:   {pipe.fps / naive.fps:.2f}  (target >= 4.00)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
