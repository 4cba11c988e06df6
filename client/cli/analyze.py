"""``qwen-client analyze``: analyse every shot of a film with one or more servers."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from client.cli.options import (
    add_command,
    add_extract_options,
    add_film_argument,
    add_output_options,
    add_posting_options,
    add_server_options,
    add_workers_option,
    check_range,
    extract_options_from_args,
    frames_to_decode,
    posting_options_from_args,
    progress_bar,
    server_urls,
    warm_up_audio,
    workers_from_args,
)
from client.cli.report import report_line
from client.cli.vocabulary_option import add_attributes_option, attributes_from_args
from client.credentials import TOKEN_ENV, read_token
from client.errors import EXIT_OK, ClientError, UsageError
from qwen_server.contract.constants import SESSION_ID_RULE, is_valid_session_id

log = logging.getLogger("client.cli")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``analyze``."""
    p = add_command(
        sub,
        "analyze",
        summary="analyse every shot of a film with one or more servers",
        description=(
            "Find the shots of FILM, sample their frames and audio features, and have the\n"
            "analysis servers caption and score them on each attribute of the server's\n"
            "vocabulary (by default suspense, darkness, ambiguity, emotional_tension,\n"
            "intensity, motion), or on those chosen with --attributes: a vocabulary file\n"
            "or a list of names. Results go to DIR/shots.jsonl as they arrive, then\n"
            "DIR/shots.csv (one column per attribute) and DIR/summary.json, the JPEGs sent\n"
            "in DIR/frames/ (unless --no-frames). --start/--end limit the run to a part of\n"
            "the film. Run the same command again after an interruption to resume (with the\n"
            "same --attributes and range).\n"
            f"The token comes from ${TOKEN_ENV} or --token-file."
        ),
        examples=[
            f"export {TOKEN_ENV}=...",
            "qwen-client analyze film.mp4 --server http://gpu1:8000 --out film_analysis",
            "qwen-client analyze film.mkv -s http://gpu1:8000 -s http://gpu2:8000 \\",
            "    --token-file ~/.qwen_token --out out --batch-size 16 --in-flight 4",
            "qwen-client analyze trailer.mp4 -s http://gpu1:8000 --out trailer \\",
            "    --attributes examples/trailer_attributes.yaml",
            "qwen-client analyze film.mp4 -s http://gpu1:8000 --out out \\",
            "    --attributes suspense,motion,darkness",
            "qwen-client analyze film.mp4 -s http://gpu1:8000 --out reel2 \\",
            "    --start 00:20:00 --end 00:40:00",
            "qwen-client analyze film.mp4 -s http://gpu1:8000 --out out --workers 4",
        ],
    )
    add_film_argument(p)
    add_server_options(p)
    add_output_options(p)
    p.add_argument(
        "--session-id",
        metavar="ID",
        help="session id for the server's stored results (default: from the file name)",
    )
    add_attributes_option(p)
    p.add_argument(
        "--no-frames",
        action="store_true",
        help="do not keep the sampled JPEGs in DIR/frames/ (records then have no 'images')",
    )
    p.add_argument(
        "--no-exports",
        action="store_true",
        help="do not write DIR/report.html and DIR/timeline.otio at the end "
        "(qwen-client export writes them later)",
    )
    add_posting_options(p)
    add_extract_options(p)
    add_workers_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client analyze``."""
    from client.api import ServerPool, session_id_for
    from client.media.probe import probe
    from client.pipeline.run import analyze

    options = extract_options_from_args(args)
    workers = workers_from_args(args)
    attributes = attributes_from_args(args)  # a bad file or name fails before any decoding
    warm_up_audio(options)
    urls = server_urls(args)
    token = read_token(args.token_file)
    posting = posting_options_from_args(args)
    session_id = args.session_id or session_id_for(args.film.name)
    if not is_valid_session_id(session_id):
        raise UsageError(f"--session-id must be {SESSION_ID_RULE}")
    info = probe(args.film)
    check_range(options, info.duration)
    servers = ServerPool(urls, token, posting)
    try:
        progress = progress_bar(
            args, frames_to_decode(info.frame_estimate, float(info.fps), options), "analysed"
        )
        report = analyze(
            info,
            args.out,
            options,
            servers,
            session_id,
            args.film.name,
            progress=progress,
            force=args.force,
            attributes=attributes,
            frames=not args.no_frames,
            workers=workers,
        )
    finally:
        servers.close()
    if not args.quiet and report.servers:
        for url, counts in report.servers.items():
            print(f"  {url}: {counts['ok']} batches ok, {counts['failed']} failed attempts")
    print(report_line(report, "analysed"))
    if not args.no_exports:
        _write_exports(Path(args.out), quiet=args.quiet)
    return EXIT_OK


def _write_exports(out: Path, *, quiet: bool) -> None:
    """report.html and timeline.otio from the finished results. A failure here loses nothing
    (the results are complete and ``qwen-client export`` can write them again), so it is a
    warning naming the way to retry, not a failed run."""
    from client.export.formats import write_default_exports

    try:
        written = write_default_exports(out)
    except (ClientError, OSError) as exc:
        log.warning(
            "the results are complete, but the editor files could not be written (%s); "
            "retry with `qwen-client export %s --format html` / `--format otio`",
            exc,
            out,
        )
        return
    if not quiet:
        print("  wrote " + ", ".join(str(path) for path in written))
