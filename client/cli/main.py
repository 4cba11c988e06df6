"""``qwen-client``: analyse whole films with the shot-analysis servers, from the command line.

Every command is a module of this package with ``add_parser(sub)`` (built with the shared
helpers of ``client.cli.options``, so every command looks and behaves alike) and a handler
``run(args) -> exit code``, listed in ``COMMANDS``. Handlers raise ``ClientError``; ``run``
here prints it as one line and returns its code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from client.cli import analyze, chat, export, health, jobs, shots, submit, trailer
from client.cli.options import EXIT_CODES_HELP
from client.credentials import TOKEN_ENV
from client.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, ClientError
from qwen_server import __version__

log = logging.getLogger("client")

COMMANDS = (analyze, shots, submit, jobs, health, chat, export, trailer)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per module of ``COMMANDS``). The version is the
    installed package's (``qwen_server.__version__``: one definition for the whole package)."""
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
            "  qwen-client submit film.mp4 --server http://gpu1:8000 --out out\n"
            "  qwen-client jobs --server http://gpu1:8000\n"
            "  qwen-client health --server http://gpu1:8000\n"
            "  qwen-client export out --format edl\n"
            "  qwen-client chat --server http://gpu1:8000 --session film.mp4 'Any chase?'\n\n"
            "run 'qwen-client COMMAND --help' for a command's options.\n\n" + EXIT_CODES_HELP
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qwen-client {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
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

    A thread left running in native code (formerly the librosa/numba warm-up inside LLVM; now
    the audio code's imports and warm-up: onnxruntime, OpenBLAS) while the interpreter shuts down
    aborts the process (exit 134) even though the results are complete.
    """
    loading = sys.modules.get("client.media.feature_loading")
    if loading is not None:
        loading.stop()  # joins the import thread, then stops the features' warm-up
    features = sys.modules.get("client.media.features")
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
