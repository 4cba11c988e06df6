"""``qwen-client submit``: send a film to a server as a job, follow it, fetch its results.

The server decodes the film on its own cores with the client's extraction code and stores the
shots in a session; this command uploads the film (streamed, with a progress bar) or names it
by its path on the server (``--on-server-path``), follows ``/jobs/{id}/events`` with a progress
bar and the server's ETA, then downloads the results folder (the one ``analyze`` writes:
shots.jsonl, shots.csv, summary.json, run.json, frames/) into ``--out`` and writes report.html
and timeline.otio as ``analyze`` does. Ctrl-C while following leaves the job running and prints
how to follow or cancel it. The extraction flags are ``analyze``'s own
(``add_extract_options``); those a job cannot take (a time range, JPEG size, ...) are refused
when set, never silently dropped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from client.cli.options import (
    add_command,
    add_extract_options,
    add_film_argument,
    add_server_options,
    add_verbosity_options,
    server_url,
)
from client.cli.vocabulary_option import add_attributes_option, attributes_from_args
from client.credentials import TOKEN_ENV, read_token
from client.errors import EXIT_INTERRUPTED, EXIT_OK, OutputConflict, UsageError

log = logging.getLogger("client.cli")

# analyze's extraction flags (argparse dests) -> the JobOptions field each one sets; the
# conversion of the value is in ``job_options``. Every other extraction flag is refused.
_MAPPED = {
    "detector": "detector",
    "threshold": "threshold",
    "min_shot_len": "min_shot_seconds",
    "frames_per_shot": "frames_per_shot",
    "no_audio": "audio",
    "no_transitions": "transitions",
}

EXITS = """\
exit codes:
  0    the job is done and its results are in DIR
  2    usage error: missing film, DIR holding other files (use --force), a flag a job
       cannot take
  3    server unreachable, or the job failed or was cancelled on the server
  4    authentication failed (401: missing or wrong token)
  5    the server refused the job (not a video, path outside its media roots,
       over its upload size or disk quota, bad options)
  130  interrupted (Ctrl-C): the job keeps running; the message says how to
       follow or cancel it
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``submit``."""
    p = add_command(
        sub,
        "submit",
        summary="send a film to a server as a job, follow it and fetch its results",
        description=(
            "Upload FILM to the server (or name it by its path there with --on-server-path),\n"
            "where it is decoded on the server's cores with the client's own extraction code\n"
            "and analysed into a session; follow the job's progress, then download its results\n"
            "folder (shots.jsonl, shots.csv, summary.json, run.json, frames/, as analyze\n"
            "writes it) into DIR, where `qwen-client export` works on it.\n"
            "Ctrl-C while following leaves the job running (qwen-client jobs follow/cancel).\n"
            f"The token comes from ${TOKEN_ENV} or --token-file."
        ),
        examples=[
            f"export {TOKEN_ENV}=...",
            "qwen-client submit film.mp4 --server http://gpu1:8000 --out film_analysis",
            "qwen-client submit film.mp4 -s http://gpu1:8000 --session sintel --title Sintel",
            "qwen-client submit film.mp4 -s http://gpu1:8000 \\",
            "    --on-server-path /srv/media/film.mp4 --no-audio --frames-per-shot 3",
        ],
        exits=EXITS,
    )
    add_film_argument(p)
    add_server_options(p, repeatable=False, help="analysis server base URL")
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        metavar="DIR",
        help="where the results go (default: FILM's name without suffix + '_analysis')",
    )
    p.add_argument("--force", action="store_true", help="replace DIR when it already holds files")
    p.add_argument("--session", metavar="ID", help="session id (default: the server's job-<id>)")
    p.add_argument("--title", metavar="T", help="film title (default: FILM's file name)")
    p.add_argument(
        "--on-server-path",
        metavar="P",
        help="the film's path on the server (under its jobs.media_roots): nothing is uploaded, "
        "FILM then only names the run and need not exist here",
    )
    p.add_argument(
        "--no-exports",
        action="store_true",
        help="do not write DIR/report.html and DIR/timeline.otio at the end",
    )
    add_attributes_option(p)
    add_extract_options(p)
    add_verbosity_options(p)
    p.set_defaults(handler=run)


def _extraction_defaults() -> dict[str, Any]:
    """The extraction flags' defaults, read from their one definition."""
    parser = argparse.ArgumentParser(add_help=False)
    add_extract_options(parser)
    return vars(parser.parse_args([]))


def job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The JobOptions fields of ``args`` (UsageError for a flag a job cannot take)."""
    defaults = _extraction_defaults()
    refused = [
        "--" + dest.replace("_", "-")
        for dest, default in defaults.items()
        if dest not in _MAPPED and getattr(args, dest, default) != default
    ]
    if refused:
        raise UsageError(
            f"{', '.join(refused)}: not available for server jobs (the server extracts with "
            "its defaults for these; use `qwen-client analyze` to set them)"
        )
    options: dict[str, Any] = {
        "detector": args.detector,
        "threshold": args.threshold,
        "min_shot_seconds": args.min_shot_len,
        "frames_per_shot": args.frames_per_shot,
        "audio": not args.no_audio,
        "transitions": not args.no_transitions,
    }
    attributes = attributes_from_args(args)
    if attributes is not None:
        if attributes.specs is not None:
            raise UsageError(
                f"{attributes.source}: a job takes attribute names the server knows, not a "
                "vocabulary file with definitions (use a list of names)"
            )
        options["attributes"] = list(attributes.names)
    if args.session is not None:
        options["session_id"] = args.session
    if args.title is not None:
        options["title"] = args.title
    return options


def check_out(out: Path, force: bool) -> None:
    """Refuse an output folder that already holds files unless ``--force`` (checked before
    anything is sent, so a long upload never ends in a conflict)."""
    if out.exists() and not out.is_dir():
        raise OutputConflict(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputConflict(f"{out} already holds files; use --force to replace them")


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client submit``."""
    from client.api.jobs import JobsClient
    from client.cli.job_follow import follow_and_fetch, interrupted_message, upload_bar

    url = server_url(args.server)
    options = job_options(args)
    out = args.out or Path(f"{args.film.stem}_analysis")
    check_out(out, args.force)
    token = read_token(args.token_file)
    if args.on_server_path is None and not args.film.is_file():
        raise UsageError(f"film not found: {args.film}")
    with JobsClient(url, token) as client:
        if args.on_server_path is not None:
            created = client.submit_path(args.on_server_path, options)
        else:
            size = args.film.stat().st_size
            with upload_bar(size, enabled=not args.quiet) as bar:
                try:
                    created = client.submit_upload(args.film, options, bar.update)
                except KeyboardInterrupt:
                    print(
                        "qwen-client: upload interrupted: no job was created (the server "
                        "removes the partial file); run the same command again",
                        file=sys.stderr,
                    )
                    return EXIT_INTERRUPTED
        job_id = str(created["job_id"])
        try:  # from here on, Ctrl-C leaves a job behind: say how to follow it
            print(f"job {job_id} queued on {url} (session {created.get('session_id')})")
            follow_and_fetch(
                client,
                job_id,
                out,
                quiet=args.quiet,
                exports=not args.no_exports,
                film=args.film,
            )
        except KeyboardInterrupt:
            print(interrupted_message(job_id, url, out), file=sys.stderr)
            return EXIT_INTERRUPTED
    return EXIT_OK
