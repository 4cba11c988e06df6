"""``qwen-client``: analyse whole films with the shot-analysis servers, from the command line.

Subcommands are registered in ``SUBCOMMANDS``: each entry adds its parser and sets a
``handler(args) -> exit code``. A new command (e.g. ``chat``) is one more function there; the
shared options (``add_server_options``; the token from ``client.credentials.read_token``) are
reusable. Handlers raise ``ClientError``; ``run`` prints it as one line and returns its code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from client.credentials import TOKEN_ENV, read_token
from client.errors import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_UNREACHABLE,
    ClientError,
    UsageError,
)
from client.options import (
    DETECTORS,
    AudioOptions,
    DetectionOptions,
    ExtractOptions,
    PostingOptions,
    SamplingOptions,
)

log = logging.getLogger("client")

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


class _Formatter(argparse.RawDescriptionHelpFormatter):
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


# --- shared options -----------------------------------------------------------------------------
def add_output_options(p: argparse.ArgumentParser) -> None:
    """--out, --force, --quiet, -v."""
    p.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument(
        "--force",
        action="store_true",
        help="discard results of an earlier run in DIR instead of resuming it",
    )
    add_verbosity_options(p)


def add_verbosity_options(p: argparse.ArgumentParser) -> None:
    """--quiet and -v."""
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or table")
    p.add_argument(
        "--verbose", "-v", action="count", default=0, help="more log output (-vv: debug)"
    )


def add_extract_options(p: argparse.ArgumentParser) -> None:
    """Shot detection, frame sampling and audio options (they shape the output)."""
    d, s, a = DetectionOptions(), SamplingOptions(), AudioOptions()
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
    g.add_argument(
        "--min-shot-len",
        type=float,
        default=d.min_shot_seconds,
        metavar="SECONDS",
        help="minimum shot length, the last shot included (a shorter last shot is merged)",
    )
    g.add_argument(
        "--detect-width",
        type=int,
        default=d.detect_width,
        metavar="PX",
        help="frames are shrunk to at least this width for detection",
    )
    g = p.add_argument_group("frames and audio")
    g.add_argument(
        "--frames-per-shot",
        type=int,
        default=s.frames_per_shot,
        metavar="N",
        help="frames sampled per shot, evenly spaced inside it",
    )
    g.add_argument(
        "--max-side",
        type=int,
        default=s.max_side,
        metavar="PX",
        help="longest side of the sampled JPEGs (multiples of 28 suit Qwen2-VL)",
    )
    g.add_argument(
        "--jpeg-quality",
        type=int,
        default=s.jpeg_quality,
        metavar="Q",
        help="JPEG quality of the sampled frames",
    )
    g.add_argument("--no-audio", action="store_true", help="skip audio features")
    g.add_argument(
        "--audio-rate",
        type=int,
        default=a.sample_rate,
        metavar="HZ",
        help="the mono rate audio is resampled to for features",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=ExtractOptions().workers,
        metavar="N",
        help="threads encoding JPEGs and computing audio features",
    )


def add_server_options(p: argparse.ArgumentParser, token: bool = True) -> None:
    """--server (repeatable) and, for authenticated commands, --token-file."""
    p.add_argument(
        "--server",
        "-s",
        action="append",
        required=True,
        metavar="URL",
        help="analysis server base URL; repeat to spread work over several servers",
    )
    if token:
        p.add_argument(
            "--token-file",
            type=Path,
            metavar="FILE",
            help=f"file holding the bearer token (default: ${TOKEN_ENV})",
        )


def extract_options_from_args(args: argparse.Namespace) -> ExtractOptions:
    """Typed options from the parsed command line (ValueError -> usage error)."""
    try:
        return ExtractOptions(
            detection=DetectionOptions(
                detector=args.detector,
                threshold=args.threshold,
                min_shot_seconds=args.min_shot_len,
                detect_width=args.detect_width,
            ),
            sampling=SamplingOptions(
                frames_per_shot=args.frames_per_shot,
                max_side=args.max_side,
                jpeg_quality=args.jpeg_quality,
                candidates=max(SamplingOptions().candidates, 8 * args.frames_per_shot),
            ),
            audio=AudioOptions(enabled=not args.no_audio, sample_rate=args.audio_rate),
            workers=max(1, args.workers),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def server_urls(args: argparse.Namespace) -> list[str]:
    """The --server URLs, checked."""
    urls = []
    for url in args.server:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"server URL must start with http:// or https://: {url!r}")
        urls.append(url.rstrip("/"))
    return urls


def _warm_up_audio(options: ExtractOptions) -> None:
    """Start librosa's one-off imports and JIT now, overlapping with opening the film."""
    if options.audio.enabled:
        from client.features import warm_up_in_background

        warm_up_in_background()


def _progress(args: argparse.Namespace, total: int | None, label: str) -> Any:
    from client.progress import Progress

    return Progress(total, enabled=not args.quiet, label=label)


# --- shots --------------------------------------------------------------------------------------
def _add_shots(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shots",
        help="find shots, sample frames and audio features (no server)",
        description=(
            "Find the shots of FILM and write, for each, its sampled frames as JPEG files and\n"
            "its audio features, without any server: DIR/shots.jsonl (one line per shot),\n"
            "DIR/shots.csv, DIR/summary.json and DIR/frames/*.jpg. Interrupted runs resume."
        ),
        epilog=(
            "examples:\n"
            "  qwen-client shots film.mp4 --out film_shots\n"
            "  qwen-client shots film.mkv --out out --detector content --threshold 30\n"
            "  qwen-client shots film.mp4 --out out --frames-per-shot 3 --max-side 336 --quiet\n\n"
            + EXIT_CODES_HELP
        ),
        formatter_class=_Formatter,
    )
    p.add_argument(
        "film", type=Path, metavar="FILM", help="video file (any container FFmpeg reads)"
    )
    add_output_options(p)
    add_extract_options(p)
    p.set_defaults(handler=_cmd_shots)


def _shots_table(records: list[dict[str, Any]]) -> str:
    lines = [
        f"{'shot':>5}  {'start':<12} {'end':<12} {'frames':>6} {'dur s':>7}  "
        f"{'samples':<24} {'rms':>7} {'centroid':>8} {'tempo':>6}"
    ]
    for r in records:
        f = r.get("audio_features") or {}
        rms = f"{f['rms_energy_mean']:.4f}" if "rms_energy_mean" in f else "-"
        cen = f"{f['spectral_centroid_mean']:.0f}" if "spectral_centroid_mean" in f else "-"
        tempo = f"{f['tempo']:.0f}" if f.get("tempo") else "-"
        samples = ",".join(str(s) for s in r["sample_frames"])
        lines.append(
            f"{r['shot_id']:>5}  {r['start_timecode']:<12} {r['end_timecode']:<12} "
            f"{r['frame_count']:>6} {r['duration']:>7.2f}  {samples:<24} "
            f"{rms:>7} {cen:>8} {tempo:>6}"
        )
    return "\n".join(lines)


def _report_line(report: Any, verb: str) -> str:
    if report.already_complete:
        return f"{report.film}: already complete, {report.shots} shots in {report.out}"
    resumed = f" ({report.resumed} from an earlier run)" if report.resumed else ""
    corrupt = (
        f", {report.corrupt_packets} corrupt packets skipped" if report.corrupt_packets else ""
    )
    if report.dropped_frames:
        corrupt += f", {report.dropped_frames} frames could not be decoded"
    if report.audio_errors:
        corrupt += f", {report.audio_errors} shots without audio (audio_error)"
    return (
        f"{report.film}: {report.shots} shots{resumed}, {verb} {report.written_now}; "
        f"{report.frames} frames ({report.duration:.1f} s of film) in {report.elapsed:.1f} s "
        f"({report.frames_per_second:.0f} frames/s, {report.realtime_factor:.1f}x real time)"
        f"{corrupt} -> {report.out}"
    )


def _cmd_shots(args: argparse.Namespace) -> int:
    from client.pipeline import extract
    from client.video import probe

    options = extract_options_from_args(args)
    _warm_up_audio(options)
    info = probe(args.film)
    progress = _progress(args, info.frame_estimate, "shots")
    report = extract(info, args.out, options, progress=progress, force=args.force)
    if not args.quiet:
        print(_shots_table(report.records))
    print(_report_line(report, "extracted"))
    return EXIT_OK


# --- analyze ------------------------------------------------------------------------------------
def _add_analyze(sub: argparse._SubParsersAction) -> None:
    po = PostingOptions()
    p = sub.add_parser(
        "analyze",
        help="analyse every shot of a film with one or more servers",
        description=(
            "Find the shots of FILM, sample their frames and audio features, and have the\n"
            "analysis servers caption and score them (suspense, darkness, ambiguity,\n"
            "emotional_tension, intensity, motion). Results go to DIR/shots.jsonl as they\n"
            "arrive, then DIR/shots.csv and DIR/summary.json. Run the same command again after\n"
            f"an interruption to resume. The token comes from ${TOKEN_ENV} or --token-file."
        ),
        epilog=(
            "examples:\n"
            f"  export {TOKEN_ENV}=...\n"
            "  qwen-client analyze film.mp4 --server http://gpu1:8000 --out film_analysis\n"
            "  qwen-client analyze film.mkv -s http://gpu1:8000 -s http://gpu2:8000 \\\n"
            "      --token-file ~/.qwen_token --out out --batch-size 16 --in-flight 4\n\n"
            + EXIT_CODES_HELP
        ),
        formatter_class=_Formatter,
    )
    p.add_argument(
        "film", type=Path, metavar="FILM", help="video file (any container FFmpeg reads)"
    )
    add_server_options(p)
    add_output_options(p)
    p.add_argument(
        "--session-id",
        metavar="ID",
        help="session id for the server's stored results (default: from the file name)",
    )
    g = p.add_argument_group("posting")
    g.add_argument(
        "--batch-size", type=int, default=po.batch_size, metavar="N", help="shots per request"
    )
    g.add_argument(
        "--in-flight",
        type=int,
        default=po.in_flight,
        metavar="K",
        help="requests in flight at once, over all servers",
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        default=po.connect_timeout,
        metavar="S",
        help="seconds to wait for a connection to a server",
    )
    g.add_argument(
        "--read-timeout",
        type=float,
        default=po.read_timeout,
        metavar="S",
        help="time a server may take to answer one batch",
    )
    g.add_argument(
        "--max-attempts",
        type=int,
        default=po.max_attempts,
        metavar="N",
        help="attempts per batch that reached a server and failed there, before giving up",
    )
    g.add_argument(
        "--retry-for",
        type=float,
        default=po.retry_for,
        metavar="SECONDS",
        help="how long to keep retrying when no server answers (e.g. one being restarted), "
        "showing 'waiting for server', before failing with exit code 3",
    )
    add_extract_options(p)
    p.set_defaults(handler=_cmd_analyze)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from client.api import ServerPool, session_id_for, valid_session_id
    from client.pipeline import analyze
    from client.video import probe

    options = extract_options_from_args(args)
    _warm_up_audio(options)
    urls = server_urls(args)
    token = read_token(args.token_file)
    try:
        posting = PostingOptions(
            batch_size=args.batch_size,
            in_flight=args.in_flight,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            max_attempts=max(1, args.max_attempts),
            retry_for=args.retry_for,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    session_id = args.session_id or session_id_for(args.film.name)
    if not valid_session_id(session_id):
        raise UsageError(
            "--session-id must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    info = probe(args.film)
    servers = ServerPool(urls, token, posting)
    try:
        progress = _progress(args, info.frame_estimate, "analysed")
        report = analyze(
            info,
            args.out,
            options,
            servers,
            session_id,
            args.film.name,
            progress=progress,
            force=args.force,
        )
    finally:
        servers.close()
    if not args.quiet and report.servers:
        for url, counts in report.servers.items():
            print(f"  {url}: {counts['ok']} batches ok, {counts['failed']} failed attempts")
    print(_report_line(report, "analysed"))
    return EXIT_OK


# --- health -------------------------------------------------------------------------------------
def _add_health(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "health",
        help="check that servers are up and serving",
        description=(
            "GET /health of each server and print its state. With a token (--token-file or\n"
            f"${TOKEN_ENV}) the token is checked too, so a wrong token is found before a run."
        ),
        epilog=(
            "examples:\n"
            "  qwen-client health --server http://gpu1:8000\n"
            "  qwen-client health -s http://gpu1:8000 -s http://gpu2:8000 --json\n\n"
            "exits 0 when every server answers status ok, 3 when one is unreachable or not\n"
            "ok, 4 when a server rejects the token.\n"
        ),
        formatter_class=_Formatter,
    )
    add_server_options(p)
    p.add_argument("--json", action="store_true", help="print the raw answers as JSON")
    add_verbosity_options(p)
    p.set_defaults(handler=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    from client.api import ServerPool

    token = read_token(args.token_file)
    pool = ServerPool(server_urls(args), token=token, options=PostingOptions(connect_timeout=5.0))
    try:
        entries = pool.health(check_token=token is not None)
    finally:
        pool.close()
    code = EXIT_OK
    for e in entries:
        h = e.get("health") or {}
        healthy = e["reachable"] and e.get("http_status") == 200 and h.get("status") == "ok"
        if not healthy:
            code = EXIT_UNREACHABLE
        if e.get("token_ok") is False and code == EXIT_OK:
            code = EXIT_AUTH
        if args.json:
            continue
        if not e["reachable"]:
            print(f"{e['url']}  unreachable  {e['error']}")
            continue
        state = h.get("status", f"HTTP {e.get('http_status')}")
        parts = [
            f"model={h.get('model')}",
            f"device={h.get('device')}",
            f"gpus={h.get('gpu_count')}",
            f"queue={h.get('queue_depth')}",
            f"version={h.get('version')}",
        ]
        if "token_ok" in e:
            parts.append("token=ok" if e["token_ok"] else "token=REJECTED")
        if h.get("error"):
            parts.append(f"error={h['error']}")
        print(f"{e['url']}  {state}  " + "  ".join(parts))
    if args.json:
        print(json.dumps(entries, indent=2))
    return code


def _add_chat(sub: argparse._SubParsersAction) -> None:
    """``chat`` lives in client/chat.py."""
    from client.chat import add_chat_parser

    add_chat_parser(sub)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_analyze,
    _add_shots,
    _add_health,
    _add_chat,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per entry of ``SUBCOMMANDS``)."""
    parser = argparse.ArgumentParser(
        prog="qwen-client",
        description=(
            "Shot-level film analysis client: finds the shots of a film (PySceneDetect), samples\n"
            "frames and audio features per shot in one decode pass, and posts them in batches to\n"
            "one or more analysis servers."
        ),
        epilog=(
            "examples:\n"
            "  qwen-client shots film.mp4 --out film_shots\n"
            f"  {TOKEN_ENV}=... qwen-client analyze film.mp4 --server http://gpu1:8000 --out out\n"
            "  qwen-client health --server http://gpu1:8000\n\n"
            "run 'qwen-client COMMAND --help' for a command's options.\n\n" + EXIT_CODES_HELP
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


class _TqdmHandler(logging.Handler):
    """Writes log lines through tqdm so they do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure_logging(verbose: int) -> None:
    """The client's only logging setup: one stderr handler on the ``client`` logger."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("qwen-client: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command and return its exit code (errors are printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    configure_logging(verbose)
    handler = args.handler
    try:
        return _run_handler(handler, args, verbose)
    finally:
        _join_background_threads()


def _join_background_threads() -> None:
    """Stop and join the client's own background threads before the process may exit.

    A thread left running in native code (the librosa/numba warm-up inside LLVM) while the
    interpreter shuts down aborts the process (exit 134) even though the results are complete.
    """
    features = sys.modules.get("client.features")
    if features is not None:
        features.stop_warm_up()


def _run_handler(
    handler: Callable[[argparse.Namespace], int], args: argparse.Namespace, verbose: int
) -> int:
    """Run one command handler, turning its failures into a one-line message and exit code."""
    try:
        return int(handler(args))
    except ClientError as exc:
        print(f"qwen-client: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("qwen-client: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if verbose:
            log.exception("unexpected error")
        print(
            f"qwen-client: unexpected error: {type(exc).__name__}: {exc} "
            "(rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point. ``run`` has stopped and joined every thread the command started
    (requests still in flight after a failure are aborted by closing their sockets), so the
    interpreter exits normally with the command's code."""
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
