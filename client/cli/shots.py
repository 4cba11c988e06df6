"""``qwen-client shots``: find the shots of a film, sample frames and audio features (no server)."""

from __future__ import annotations

import argparse

from client.cli.options import (
    add_command,
    add_extract_options,
    add_film_argument,
    add_output_options,
    add_workers_option,
    check_range,
    extract_options_from_args,
    frames_to_decode,
    progress_bar,
    warm_up_audio,
    workers_from_args,
)
from client.cli.report import report_line, shots_table
from client.errors import EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``shots``."""
    p = add_command(
        sub,
        "shots",
        summary="find shots, sample frames and audio features (no server)",
        description=(
            "Find the shots of FILM and write, for each, its sampled frames as JPEG files and\n"
            "its audio features, without any server: DIR/shots.jsonl (one line per shot),\n"
            "DIR/shots.csv, DIR/summary.json and DIR/frames/*.jpg. Interrupted runs resume."
        ),
        examples=[
            "qwen-client shots film.mp4 --out film_shots",
            "qwen-client shots film.mkv --out out --detector content --threshold 30",
            "qwen-client shots film.mp4 --out out --frames-per-shot 3 --max-side 336 --quiet",
            "qwen-client shots film.mp4 --out opening --end 00:05:00",
            "qwen-client shots film.mp4 --out film_shots --workers 4",
        ],
    )
    add_film_argument(p)
    add_output_options(p)
    add_extract_options(p)
    add_workers_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client shots``."""
    from client.media.probe import probe
    from client.pipeline.run import extract

    options = extract_options_from_args(args)
    workers = workers_from_args(args)
    warm_up_audio(options)
    info = probe(args.film)
    check_range(options, info.duration)
    progress = progress_bar(
        args, frames_to_decode(info.frame_estimate, float(info.fps), options), "shots"
    )
    report = extract(info, args.out, options, progress=progress, force=args.force, workers=workers)
    if not args.quiet:
        print(shots_table(report.records))
    print(report_line(report, "extracted"))
    return EXIT_OK
