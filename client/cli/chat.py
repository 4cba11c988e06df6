"""``qwen-client chat``: ask a question about a film's results and stream the answer.

The film is a session stored on the server (``--session ID``) or a local run's results
(``--results DIR``, its ``shots.jsonl`` sent inline); the chat itself runs on the server
(``client.chat``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.cli.options import add_command, add_server_options, add_verbosity_options, server_url
from client.credentials import TOKEN_ENV, read_token
from client.outputs import SHOTS as RESULTS_FILE  # what client.chat sends inline


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``chat``."""
    p = add_command(
        sub,
        "chat",
        summary="ask a question about a film's results (answer streamed to stdout)",
        description=(
            "Ask a question about a film, answered by the server's chat model from the shot\n"
            "results. The answer is streamed to stdout; cited shots are listed on stderr.\n"
            f"The token comes from ${TOKEN_ENV} or --token-file."
        ),
        examples=[
            "qwen-client chat --server http://gpu1:8000 --session film.mp4 \\",
            "    'Where is the film most suspenseful?'",
            "qwen-client chat -s http://gpu1:8000 --results film_analysis \\",
            "    'Which shots are darkest?' --no-stream",
        ],
    )
    p.add_argument("question", help="the question, e.g. 'Where is the film most suspenseful?'")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--session", metavar="ID", help="a session stored on the server")
    source.add_argument(
        "--results",
        metavar="DIR",
        type=Path,
        help=f"a local run's output folder (its {RESULTS_FILE} is sent inline)",
    )
    add_server_options(p, repeatable=False, help="server base URL")
    p.add_argument(
        "--no-stream", action="store_true", help="wait for the whole answer instead of streaming"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the server's answer",
    )
    add_verbosity_options(p, quiet=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client chat``."""
    # Imported here: client.chat loads httpx, which every other command's start would pay.
    from client.chat import ask

    return ask(
        server_url(args.server or ""),
        args.question,
        read_token(args.token_file),
        session=args.session,
        results=args.results,
        stream=not args.no_stream,
        timeout=args.timeout,
        out=sys.stdout,
        err=sys.stderr,
    )
