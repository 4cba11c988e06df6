"""What every ``qwen-client`` command shares: how a command's parser is made (``add_command``:
description, examples, exit codes, one help formatter), the option groups (output, verbosity,
server, extraction and time range, posting) and their conversion to typed options
(``--attributes`` is in ``vocabulary_option``). A command module uses these and adds only its
own arguments."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.credentials import TOKEN_ENV
from client.errors import UsageError
from client.options import (
    DETECTORS,
    AudioOptions,
    DetectionOptions,
    ExtractOptions,
    PostingOptions,
    SamplingOptions,
    TimeRange,
)

log = logging.getLogger("client.cli")

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    unexpected error (a bug; rerun with -v for the traceback)
  2    usage error or bad input: missing file, not a video, no video stream,
       output directory holding a different run, unreadable token file; for
       chat, a request the server refused (unknown session, invalid results)
  3    server unreachable (after --retry-for seconds), or every server failed
  4    authentication failed (401: missing or wrong token)
  5    a server rejected a request as invalid; for chat, the chat provider failed
  130  interrupted (Ctrl-C); run the same command again to resume
"""

FILM_HELP = "video file (any container FFmpeg reads)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and shows meaningful defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and default not in (None, argparse.SUPPRESS)
            and not isinstance(default, bool)
            and not isinstance(action, argparse._CountAction)
        ):
            text += " (default: %(default)s)"
        return text


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
    exits: str = EXIT_CODES_HELP,
) -> argparse.ArgumentParser:
    """A command's parser in the one style of every command: ``summary`` in the command list,
    ``description`` on top of its --help, then its examples and what its exit codes mean."""
    epilog = "examples:\n" + "".join(f"  {line}\n" for line in examples) + "\n" + exits
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=HelpFormatter,
    )
    return parser


def add_film_argument(p: argparse.ArgumentParser) -> None:
    """The FILM positional argument."""
    p.add_argument("film", type=Path, metavar="FILM", help=FILM_HELP)


def add_output_options(p: argparse.ArgumentParser) -> None:
    """--out, --force, --quiet, -v."""
    p.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument(
        "--force",
        action="store_true",
        help="discard results of an earlier run in DIR instead of resuming it",
    )
    add_verbosity_options(p)


def add_verbosity_options(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    """-v (every command) and, where there is a progress bar or table, --quiet."""
    if quiet:
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or table")
    p.add_argument(
        "--verbose", "-v", action="count", default=0, help="more log output (-vv: debug)"
    )


def add_server_options(
    p: argparse.ArgumentParser,
    repeatable: bool = True,
    help: str = "analysis server base URL; repeat to spread work over several servers",
) -> None:
    """--server (repeatable where work can be spread) and --token-file."""
    p.add_argument(
        "--server",
        "-s",
        action="append" if repeatable else "store",
        required=True,
        metavar="URL",
        help=help,
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the bearer token (default: ${TOKEN_ENV})",
    )


def add_extract_options(p: argparse.ArgumentParser) -> None:
    """Shot detection, frame sampling and audio options (they shape the output)."""
    d = DetectionOptions()
    g = p.add_argument_group("shot detection")
    g.add_argument(
        "--detector", choices=DETECTORS, default=d.detector, help="PySceneDetect detector"
    )
    g.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detector threshold (default: adaptive 3.0, content 27, hash 0.395, histogram 0.05)",
    )
    _option(
        g,
        "--min-shot-len",
        float,
        d.min_shot_seconds,
        "SECONDS",
        "minimum shot length, the last shot included (a shorter last shot is merged)",
    )
    _option(
        g,
        "--detect-width",
        int,
        d.detect_width,
        "PX",
        "frames are shrunk to at least this width for detection",
    )
    g.add_argument(
        "--no-transitions",
        action="store_true",
        help="hard cuts only: no dissolve, fade or black detection (every record's "
        "transitions are then the detector's cuts, technical_cues null)",
    )
    g = p.add_argument_group("time range")
    g.add_argument(
        "--start",
        metavar="TIME",
        help="only the shots from TIME on: seconds (90.5) or HH:MM:SS[.mmm] (00:01:30.500); a "
        "shot straddling --start or --end is clipped to the range, with the film's frame "
        "numbers and shot ids (default: the film's start)",
    )
    g.add_argument(
        "--end", metavar="TIME", help="only the shots before TIME (default: the film's end)"
    )
    _add_sampling_options(p)


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """Frame sampling and audio options (part of ``add_extract_options``)."""
    s, a = SamplingOptions(), AudioOptions()
    g = p.add_argument_group("frames and audio")
    _option(
        g,
        "--frames-per-shot",
        int,
        s.frames_per_shot,
        "N",
        "frames sampled per shot, evenly spaced inside it",
    )
    _option(
        g,
        "--max-side",
        int,
        s.max_side,
        "PX",
        "longest side of the sampled JPEGs (multiples of 28 suit Qwen2-VL)",
    )
    _option(g, "--jpeg-quality", int, s.jpeg_quality, "Q", "JPEG quality of the sampled frames")
    g.add_argument("--no-audio", action="store_true", help="skip audio features")
    _option(
        g,
        "--audio-rate",
        int,
        a.sample_rate,
        "HZ",
        "the mono rate audio is resampled to for features",
    )
    _option(
        g,
        "--prepare-threads",
        int,
        ExtractOptions().workers,
        "N",
        "threads encoding JPEGs and computing audio features",
    )


def add_workers_option(p: argparse.ArgumentParser) -> None:
    """--workers: decode worker processes (``client.pipeline.chunked``)."""
    p.add_argument(
        "--workers",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="decode the film in N worker processes, split at keyframes, with the very shots "
        "of one pass (1: one pass in this process; a time range is always decoded in one pass)",
    )


def workers_from_args(args: argparse.Namespace) -> int:
    """The --workers count, checked."""
    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, not {workers}")
    return int(workers)


def add_posting_options(p: argparse.ArgumentParser) -> None:
    """How batches are posted to the servers (``PostingOptions``)."""
    po = PostingOptions()
    g = p.add_argument_group("posting")
    _option(g, "--batch-size", int, po.batch_size, "N", "shots per request")
    _option(
        g, "--in-flight", int, po.in_flight, "K", "requests in flight at once, over all servers"
    )
    _option(
        g,
        "--connect-timeout",
        float,
        po.connect_timeout,
        "S",
        "seconds to wait for a connection to a server",
    )
    _option(
        g,
        "--read-timeout",
        float,
        po.read_timeout,
        "S",
        "time a server may take to answer one batch",
    )
    _option(
        g,
        "--max-attempts",
        int,
        po.max_attempts,
        "N",
        "attempts per batch that reached a server and failed there, before giving up",
    )
    _option(
        g,
        "--retry-for",
        float,
        po.retry_for,
        "SECONDS",
        "how long to keep retrying when no server answers (e.g. one being restarted), "
        "showing 'waiting for server', before failing with exit code 3",
    )


def parse_time(value: str, flag: str) -> float:
    """Seconds from ``SECONDS`` or ``[[HH:]MM:]SS[.mmm]`` (UsageError naming ``flag``)."""
    text = value.strip()
    parts = text.split(":")
    try:
        if len(parts) > 3 or any(p.strip() == "" for p in parts):
            raise ValueError
        numbers = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected seconds or HH:MM:SS[.mmm]") from None
    if any(not (n >= 0 and n != float("inf")) for n in numbers):
        raise UsageError(f"{flag} {value!r}: a time must be a finite number >= 0")
    if any(n >= 60 for n in numbers[1:]) or any(n != int(n) for n in numbers[:-1]):
        raise UsageError(f"{flag} {value!r}: minutes and seconds must be below 60")
    seconds = 0.0
    for n in numbers:
        seconds = seconds * 60 + n
    return seconds


def range_from_args(args: argparse.Namespace) -> TimeRange | None:
    """The run's time range from --start/--end (None: the whole film)."""
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start is None and end is None:
        return None
    try:
        return TimeRange(
            parse_time(start, "--start") if start is not None else 0.0,
            parse_time(end, "--end") if end is not None else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_range(options: ExtractOptions, duration: float | None) -> None:
    """Refuse a time range that starts or ends past the film's end (``duration``, when the
    container declares one; half a second of slack for rounded durations)."""
    span = options.range
    if span is None or duration is None:
        return
    if span.start >= duration:
        raise UsageError(f"--start {span.start:g} s is past the film's end ({duration:.3f} s)")
    if span.end is not None and span.end > duration + 0.5:
        raise UsageError(f"--end {span.end:g} s is past the film's end ({duration:.3f} s)")


def frames_to_decode(frame_estimate: int | None, fps: float, options: ExtractOptions) -> int | None:
    """The progress bar's total: the film's frame estimate, or with ``--end`` the frames up to
    it (the pass stops there, plus the minimum shot length)."""
    span = options.range
    if span is None or span.end is None:
        return frame_estimate
    upto = round((span.end + options.detection.min_shot_seconds) * fps)
    return min(frame_estimate, upto) if frame_estimate is not None else upto


def _option(g: Any, flag: str, kind: type, default: Any, metavar: str, help: str) -> None:
    """One typed option with a default and a metavar (the common shape of the groups above)."""
    g.add_argument(flag, type=kind, default=default, metavar=metavar, help=help)


def extract_options_from_args(args: argparse.Namespace) -> ExtractOptions:
    """Typed options from the parsed command line (ValueError -> usage error)."""
    try:
        return ExtractOptions(
            detection=DetectionOptions(
                detector=args.detector,
                threshold=args.threshold,
                min_shot_seconds=args.min_shot_len,
                detect_width=args.detect_width,
                transitions=not getattr(args, "no_transitions", False),
            ),
            sampling=SamplingOptions(
                frames_per_shot=args.frames_per_shot,
                max_side=args.max_side,
                jpeg_quality=args.jpeg_quality,
                candidates=max(SamplingOptions().candidates, 8 * args.frames_per_shot),
            ),
            audio=AudioOptions(enabled=not args.no_audio, sample_rate=args.audio_rate),
            workers=max(1, args.prepare_threads),
            range=range_from_args(args),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def posting_options_from_args(args: argparse.Namespace) -> PostingOptions:
    """Typed posting options from the parsed command line (ValueError -> usage error)."""
    try:
        return PostingOptions(
            batch_size=args.batch_size,
            in_flight=args.in_flight,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            max_attempts=max(1, args.max_attempts),
            retry_for=args.retry_for,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def server_url(url: str) -> str:
    """One --server URL, checked, without a trailing slash."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"server URL must start with http:// or https://: {url!r}")
    return url.rstrip("/")


def server_urls(args: argparse.Namespace) -> list[str]:
    """The --server URLs, checked."""
    return [server_url(url) for url in args.server]


def warm_up_audio(options: ExtractOptions) -> None:
    """Start loading the audio feature code (filter banks, VAD model) now, overlapping with
    opening the film."""
    if options.audio.enabled:
        from client.media import feature_loading

        feature_loading.start()  # in a thread: the film is probed meanwhile


def progress_bar(args: argparse.Namespace, total: int | None, label: str) -> Any:
    """The command's progress bar (hidden with --quiet)."""
    from client.progress import Progress

    return Progress(total, enabled=not args.quiet, label=label)
