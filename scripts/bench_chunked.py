"""Benchmark of the chunked parallel decode: 1 worker (the one pass) vs N worker processes.

Usage::

    python scripts/bench_chunked.py                      # 60 s 1080p film, 1 vs 2 workers
    python scripts/bench_chunked.py --seconds 120 --workers 2 --no-audio

The film (made once, then reused from ``$TMP``) is a generated 1080p25 H.264 + AAC film
(``tests/film_factory.py``) with hard cuts every 1-6 s, film grain (a film-like bitrate) and the
keyframe layout of a real encode: an IDR keyframe at every cut at least 1 s after the last
keyframe, else every 10 s (x264's keyint 250 / min-keyint 25 with scene-cut detection; fixed
here so the layout does not depend on the grain). Two films by default (``--slices``): one slice
per frame, as the x264 and FFmpeg command lines encode (streaming and web films; the one pass
then decodes each frame on one core), and several slices per frame, as PyAV's slice-threaded
encoder writes (like Blu-ray's four slices: FFmpeg's slice threads then already spread each frame
over the cores, so on 2 cores the one pass leaves little for a second worker).

Each mode runs the same extraction the CLI does (``ShotSource`` / ``ChunkedShotSource``: cuts,
transitions, samples encoded to JPEG, audio features unless ``--no-audio``), timed from start to
the last shot. Printed: wall time side by side, speedup, whether the shots are identical (every
record, sample frame, JPEG byte and audio feature), the frames each worker decoded (warm-up and
overrun included), the per-core rate (frames decoded per second per worker) and the projection
of a 2-hour 1080p film on 16 cores from it. ``uptime`` is printed before and after: other load
on the machine distorts the numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FPS = 25
GOP = 250
MIN_KEYINT = 25


def make_film(seconds: float, path: Path, grain: int, one_slice: bool, seed: int = 1) -> None:
    """The benchmark film (see module doc)."""
    from tests.bench_films import random_cut_shots
    from tests.film_factory import make_film as write

    shots = random_cut_shots(seconds, FPS, seed)
    cuts, at = [], 0
    for shot in shots:
        at += shot.frames
        cuts.append(at)
    keyframes, last = [], 0
    for frame in range(1, at):  # x264's choice, made explicit
        if frame in cuts and frame - last >= MIN_KEYINT or frame - last >= GOP:
            keyframes.append(frame)
            last = frame
    t0 = time.perf_counter()
    write(
        path,
        shots,
        size=(1920, 1080),
        gop=GOP,
        preset="veryfast",
        crf=20,
        grain=grain,
        scenecut=False,
        keyframes=keyframes,
        one_slice=one_slice,
    )
    print(
        f"made {path}: {at} frames 1920x1080, {len(cuts) - 1} cuts, {len(keyframes) + 1} "
        f"keyframes, grain {grain}, {'one slice' if one_slice else 'several slices'} per "
        f"frame, {path.stat().st_size / 1e6:.1f} MB in "
        f"{time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )


def repeat_film(source: Path, path: Path, times: int) -> None:
    """``source`` played ``times`` times in a row, by stream copy (no re-encoding: each copy
    starts on its IDR keyframe, and the join is one more hard cut): a long film in seconds."""
    import av

    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        length = {}
        for s in src.streams:
            duration = s.duration or round(float(src.duration / 1e6) / s.time_base)
            length[s.index] = duration
        for k in range(times):
            src.seek(0)
            for packet in src.demux():
                if packet.size == 0 or packet.pts is None:
                    continue
                shift = k * length[packet.stream.index]
                packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    print(f"made {path}: {source.name} {times} times by stream copy", file=sys.stderr)


def timed(source: Any) -> tuple[list[tuple[Any, ...]], float, float, float]:
    """Every prepared shot of a source, the wall time to the last one, and the CPU seconds of
    this process and of its (joined) worker processes meanwhile."""
    before, t0 = os.times(), time.perf_counter()
    try:
        records = [(p.base_record(), p.sample_frames, p.jpegs, p.audio_features) for p in source]
    finally:
        source.close()
    after, wall = os.times(), time.perf_counter() - t0
    mine = after.user + after.system - before.user - before.system
    workers = (
        after.children_user + after.children_system - before.children_user - before.children_system
    )
    return records, wall, mine, workers


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="film length")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to compare")
    parser.add_argument("--grain", type=int, default=6, help="film grain (0: clean)")
    parser.add_argument("--film", type=Path, help="film to use (default: made in $TMP)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="play the made film this many times in a row"
    )
    parser.add_argument("--no-audio", action="store_true", help="skip audio features")
    parser.add_argument("--hours", type=float, default=2.0, help="projected film length")
    parser.add_argument("--cores", type=int, default=16, help="projected worker count")
    parser.add_argument(
        "--slices",
        nargs="+",
        choices=["one", "several"],
        default=["one", "several"],
        help="films to make: one slice per frame (x264/FFmpeg command-line encodes: the one "
        "pass decodes a frame on one core) and several (PyAV's slice-threaded encoder, like "
        "Blu-ray's four slices: FFmpeg's slice threads already spread a frame over the cores)",
    )
    args = parser.parse_args()
    films = [args.film] if args.film else [None]
    kinds = args.slices if not args.film else ["given"]
    identical = [bench(args, films[0], kind) for kind in kinds]
    return 0 if all(identical) else 1


def bench(args: argparse.Namespace, film: Path | None, kind: str) -> bool:
    """One film: 1 worker vs ``args.workers``, printed; whether the shots were identical."""

    from dataclasses import replace

    from client.media.probe import probe
    from client.options import AudioOptions, ExtractOptions
    from client.pipeline.chunked import ChunkedShotSource
    from client.pipeline.source import ShotSource

    film = film or Path(tempfile.gettempdir()) / (
        f"bench_chunked_1080p_{args.seconds:g}s_grain{args.grain}_{kind}_slice.mp4"
    )
    if not film.exists():
        make_film(args.seconds, film, args.grain, one_slice=kind == "one")
    if args.repeat > 1:
        long = film.with_name(f"{film.stem}_x{args.repeat}{film.suffix}")
        if not long.exists():
            repeat_film(film, long, args.repeat)
        film = long
    info = probe(film)
    options = ExtractOptions()
    if args.no_audio:
        options = replace(options, audio=AudioOptions(enabled=False))
    print(
        f"\n== film: {film} ({info.frame_estimate} frames {info.width}x{info.height}, "
        f"{kind} slice(s) per frame)"
    )
    print(f"before: {uptime()}")
    one, t1, cpu1, _ = timed(ShotSource(info, options))
    chunked = ChunkedShotSource(info, options, workers=args.workers)
    many, tn, parent_cpu, workers_cpu = timed(chunked)
    print(f"after:  {uptime()}")
    scanner = chunked.scanner
    frames = info.frame_estimate or 0
    decoded = scanner.frames_decoded
    per_core_1 = frames / t1
    per_core_n = decoded / (tn * args.workers)
    # Load-independent: frames per CPU second of the worker processes (decode, detection,
    # sampling, JPEG), and the parent's CPU (index, stitch, audio decode and features).
    per_cpu = decoded / workers_cpu if workers_cpu > 0 else 0.0
    speedup = t1 / tn
    print()
    head = f"{'workers':>8} {'wall s':>8} {'frames/s':>9} {'decoded':>8} {'per core':>9}"
    print(f"{head} {'CPU s':>8}")
    print(f"{1:>8} {t1:>8.2f} {frames / t1:>9.1f} {frames:>8} {per_core_1:>9.1f} {cpu1:>8.1f}")
    print(
        f"{args.workers:>8} {tn:>8.2f} {frames / tn:>9.1f} {decoded:>8} {per_core_n:>9.1f} "
        f"{parent_cpu + workers_cpu:>8.1f}"
    )
    print()
    print(f"speedup: {speedup:.2f}x ({args.workers} workers vs 1, wall time)")
    print(
        f"CPU: 1 worker {cpu1:.1f} s; {args.workers} workers {workers_cpu:.1f} s in the "
        f"workers ({per_cpu:.1f} frames per CPU second) + {parent_cpu:.1f} s in the parent"
    )
    chunk_frames = scanner.decoded_per_chunk
    if per_cpu > 0 and chunk_frames:
        critical = max(chunk_frames) / per_cpu
        print(
            f"frames per chunk: {chunk_frames}; on idle cores the largest chunk takes "
            f"{critical:.1f} s at {per_cpu:.1f} frames/s: {cpu1 / critical:.2f}x the 1-worker "
            "CPU time (start-up and the parent not counted)"
        )
    print(f"identical shots: {'yes' if one == many else 'no'} ({len(one)} vs {len(many)} shots)")
    print(f"fallback: {scanner.fallback_reason}")
    print(f"chunks: {[(c.seek, c.start, c.end) for c in scanner.plan]} seams: {scanner.seams}")
    overhead = decoded / frames - 1 if frames else 0.0
    print(f"frames decoded beyond the film's (warm-ups, overruns): {overhead:.1%}")
    film_frames = args.hours * 3600 * FPS
    # Each seam costs what it cost here: the next chunk's warm-up (with its seek back to a
    # keyframe) and this chunk's overrun to the first agreeing shot after the border.
    per_seam = max(0, decoded - frames) / max(1, args.workers - 1)
    rate = per_cpu or per_core_n
    projected = (film_frames + (args.cores - 1) * per_seam) / (args.cores * rate)
    print(
        f"projection: a {args.hours:g} h 1080p25 film ({film_frames:.0f} frames) on "
        f"{args.cores} workers at {rate:.1f} frames/s each: {projected / 60:.1f} min "
        f"of decode, {per_seam:.0f} extra frames per seam (1 worker: "
        f"{film_frames / per_core_1 / 60:.1f} min)"
    )
    return one == many


if __name__ == "__main__":
    sys.exit(main())
