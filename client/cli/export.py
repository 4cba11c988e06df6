"""``qwen-client export``: a results folder as an editor's timeline (OTIO, CMX 3600 EDL,
FCP X XML), as shots.csv, or as the HTML report (no server, no decoding)."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.cli.options import add_command, add_verbosity_options
from client.errors import EXIT_OK
from client.export import DEFAULT_NAMES, FORMATS


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    defaults = ", ".join(f"{fmt}: {name}" for fmt, name in DEFAULT_NAMES.items())
    p = add_command(
        sub,
        "export",
        summary="export a results folder for editors (OTIO, EDL, FCP X XML, CSV, HTML)",
        description=(
            "Write the shots of RESULTS_DIR (from 'qwen-client analyze' or 'shots') as a\n"
            "timeline an editor opens: one clip per shot, cut from the film at its own frame\n"
            "rate, with a marker per shot holding its caption and top scores (OTIO: every\n"
            "attribute, the audio class and the timecodes in the marker's metadata['qwen']).\n"
            "EDL markers are '* LOC:' locator lines, which DaVinci Resolve and Avid import.\n"
            f"Written into RESULTS_DIR unless --out ({defaults})."
        ),
        examples=[
            "qwen-client export out --format otio",
            "qwen-client export out --format edl --out ~/edit/film.edl",
            "qwen-client export out --format fcpxml",
        ],
    )
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="a results folder")
    p.add_argument("--format", "-f", choices=FORMATS, default="otio", help="what to write")
    p.add_argument("--out", "-o", type=Path, metavar="FILE", help="the file to write")
    add_verbosity_options(p, quiet=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client export``."""
    from client.export.formats import export

    written = export(args.results, args.format, args.out)
    print(f"{args.results}: wrote {args.format} -> {written}")
    return EXIT_OK
