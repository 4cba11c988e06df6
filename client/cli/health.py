"""``qwen-client health``: check that servers are up and serving (and the token with them)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from client.cli.options import add_command, add_server_options, add_verbosity_options, server_urls
from client.credentials import TOKEN_ENV, read_token
from client.errors import EXIT_AUTH, EXIT_OK, EXIT_UNREACHABLE
from client.options import PostingOptions


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``health``."""
    p = add_command(
        sub,
        "health",
        summary="check that servers are up and serving",
        description=(
            "GET /health of each server and print its state. With a token (--token-file or\n"
            f"${TOKEN_ENV}) the token is checked too, so a wrong token is found before a run."
        ),
        examples=[
            "qwen-client health --server http://gpu1:8000",
            "qwen-client health -s http://gpu1:8000 -s http://gpu2:8000 --json",
        ],
        exits=(
            "exits 0 when every server answers status ok, 3 when one is unreachable or not\n"
            "ok, 4 when a server rejects the token.\n"
        ),
    )
    add_server_options(p)
    p.add_argument("--json", action="store_true", help="print the raw answers as JSON")
    add_verbosity_options(p)
    p.set_defaults(handler=run)


def exit_code(entries: list[dict[str, Any]]) -> int:
    """3 when a server is unreachable or not ok, else 4 when one rejected the token, else 0."""
    code = EXIT_OK
    for e in entries:
        h = e.get("health") or {}
        healthy = e["reachable"] and e.get("http_status") == 200 and h.get("status") == "ok"
        if not healthy:
            code = EXIT_UNREACHABLE
        if e.get("token_ok") is False and code == EXIT_OK:
            code = EXIT_AUTH
    return code


def describe(e: dict[str, Any]) -> str:
    """One line for one server's answer."""
    if not e["reachable"]:
        return f"{e['url']}  unreachable  {e['error']}"
    h = e.get("health") or {}
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
    return f"{e['url']}  {state}  " + "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Handler of ``qwen-client health``."""
    from client.api import ServerPool

    token = read_token(args.token_file)
    pool = ServerPool(server_urls(args), token=token, options=PostingOptions(connect_timeout=5.0))
    try:
        entries = pool.health(check_token=token is not None)
    finally:
        pool.close()
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        for e in entries:
            print(describe(e))
    return exit_code(entries)
