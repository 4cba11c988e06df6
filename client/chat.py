"""``qwen-client chat``: ask a question about a film's results and stream the answer.

The film is a session stored on the server (``--session ID``) or a local run's results
(``--results DIR``, reading ``DIR/shots.jsonl`` and sending the shots inline). Either way the
server does the chat, so ``--server`` is needed. The answer is written to stdout as it arrives;
the shots it cites go to stderr, so stdout stays just the answer.

Exit codes: 0 answered, 2 bad input (arguments, results file, unknown session, request refused),
3 server unreachable, 4 authentication failed, 5 chat provider failure (or the server failing).
Errors are one line on stderr; the token is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_CHAT_FAILED = 5

TOKEN_ENV = "QWEN_SERVER_TOKEN"
RESULTS_FILE = "shots.jsonl"
ATTRIBUTES = ("suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion")
MAX_INLINE_SHOTS = 20_000  # the server's limit (qwen_server.session_schemas)


class ChatCliError(Exception):
    """A failure reported as one line with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def add_chat_parser(subparsers: Any) -> None:
    """Register the ``chat`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "chat",
        help="ask a question about a film's results (answer streamed to stdout)",
        description=(
            "Ask a question about a film, answered by the server's chat model from the shot "
            "results. The answer is streamed to stdout; cited shots are listed on stderr."
        ),
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
    p.add_argument("--server", required=True, metavar="URL", help="server base URL")
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the server's bearer token (default: ${TOKEN_ENV})",
    )
    p.add_argument(
        "--no-stream", action="store_true", help="wait for the whole answer instead of streaming"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the server's answer (default 300)",
    )
    p.set_defaults(func=run_chat)


# --- inputs ----------------------------------------------------------------------------------


def read_token(token_file: Path | None) -> str | None:
    """The bearer token: ``--token-file`` (first non-comment line) wins over ``$QWEN_SERVER_TOKEN``.
    None when neither is given (a server in insecure development mode needs none)."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ChatCliError(
                f"cannot read token file {token_file}: {exc.strerror or exc}", EXIT_BAD_INPUT
            ) from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                return line
        raise ChatCliError(f"token file {token_file} holds no token", EXIT_BAD_INPUT)
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def _first(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def load_results(path: Path) -> list[dict[str, Any]]:
    """The shots of a local run (``DIR/shots.jsonl``, or the file itself), reduced to what the
    chat uses. Failed shots (no caption and no scores) are skipped."""
    file = path / RESULTS_FILE if path.is_dir() else path
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ChatCliError(
            f"no results at {file} (run 'qwen-client analyze' first)", EXIT_BAD_INPUT
        ) from None
    except OSError as exc:
        raise ChatCliError(f"cannot read {file}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    shots: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ChatCliError(f"{file} line {number}: not valid JSON", EXIT_BAD_INPUT) from None
        if not isinstance(row, dict) or not isinstance(row.get("shot_id"), int):
            raise ChatCliError(f"{file} line {number}: no integer shot_id", EXIT_BAD_INPUT)
        attrs = row.get("attributes")
        if not isinstance(attrs, dict):  # flat layouts: scores as top-level columns
            attrs = {a: row[a] for a in ATTRIBUTES if isinstance(row.get(a), (int, float))}
        caption = row.get("caption")
        if not caption and not attrs:
            continue
        shots.append(
            {
                "shot_id": row["shot_id"],
                "start_time": _first(row, "start_time", "start", "start_s"),
                "end_time": _first(row, "end_time", "end", "end_s"),
                "caption": caption or "",
                "attributes": attrs,
                "audio_class": row.get("audio_class"),
            }
        )
    if not shots:
        raise ChatCliError(f"{file} holds no analysed shots", EXIT_BAD_INPUT)
    if len(shots) > MAX_INLINE_SHOTS:
        raise ChatCliError(
            f"{file} holds {len(shots)} shots; at most {MAX_INLINE_SHOTS} can be sent inline "
            "(store the film as a session and use --session)",
            EXIT_BAD_INPUT,
        )
    return shots


# --- talking to the server -------------------------------------------------------------------


def _detail(response: httpx.Response) -> str:
    """The server's error message (``{"detail": ...}``) in one line."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # request validation errors
        parts = []
        for err in detail:
            if isinstance(err, dict):
                loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        detail = "; ".join(parts)
    text = str(detail) if detail else (response.reason_phrase or "error")
    return " ".join(text.split())


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = _detail(response)
    if status in (401, 403):
        raise ChatCliError(
            f"authentication failed (HTTP {status}): {detail}; check ${TOKEN_ENV} or --token-file",
            EXIT_AUTH,
        )
    if status in (400, 404, 413, 422):
        raise ChatCliError(f"request refused (HTTP {status}): {detail}", EXIT_BAD_INPUT)
    retry = response.headers.get("Retry-After")
    hint = f" (retry after {retry} s)" if retry else ""
    raise ChatCliError(f"chat failed (HTTP {status}): {detail}{hint}", EXIT_CHAT_FAILED)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) for each Server-Sent Event; the name is "message" when not given."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue  # comment / keep-alive
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def _print_citations(done: dict[str, Any], err: TextIO) -> None:
    cited = done.get("cited_shots") or []
    shown, total = done.get("shots_in_context"), done.get("shots_total")
    note = f"[{shown} of {total} shots in context"
    note += f"; cited shots: {', '.join(str(c) for c in cited)}]" if cited else "]"
    print(note, file=err)


def _stream_answer(client: httpx.Client, url: str, body: dict[str, Any], out: TextIO) -> dict:
    """POST with ``stream: true`` and write each delta to ``out`` as it arrives."""
    wrote = False
    with client.stream("POST", url, json={**body, "stream": True}) as response:
        if response.status_code >= 400:
            response.read()
            _raise_for_status(response)
        for event, data in sse_events(response.iter_lines()):
            try:
                payload = json.loads(data)
            except ValueError:
                raise ChatCliError("server sent a malformed event", EXIT_CHAT_FAILED) from None
            if event == "error":
                if wrote:
                    out.write("\n")
                    out.flush()
                status = payload.get("status", "?")
                detail = " ".join(str(payload.get("detail", "error")).split())
                raise ChatCliError(
                    f"chat failed mid-answer (HTTP {status}): {detail}", EXIT_CHAT_FAILED
                )
            if "delta" in payload:
                out.write(str(payload["delta"]))
                out.flush()
                wrote = True
            elif payload.get("done"):
                if wrote:
                    out.write("\n")
                    out.flush()
                return payload
    if wrote:
        out.write("\n")
    raise ChatCliError("the answer stream ended before it was complete", EXIT_CHAT_FAILED)


def ask(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Validate the arguments, send the question and write the answer; raise ChatCliError."""
    question = (args.question or "").strip()
    if not question:
        raise ChatCliError("the question is empty", EXIT_BAD_INPUT)
    server = (args.server or "").rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise ChatCliError(
            f"--server must be an http:// or https:// URL, got {server!r}", EXIT_BAD_INPUT
        )
    token = read_token(args.token_file)
    body: dict[str, Any] = {"question": question}
    if args.session is not None:
        body["session_id"] = args.session
    else:
        body["results"] = load_results(args.results)

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    try:
        with httpx.Client(headers=headers, timeout=timeout) as client:
            if args.no_stream:
                response = client.post(server + "/chat", json=body)
                _raise_for_status(response)
                done = response.json()
                print(done.get("answer", ""), file=out)
            else:
                done = _stream_answer(client, server + "/chat", body, out)
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            raise ChatCliError(
                f"cannot reach the server at {server} (timed out)", EXIT_UNREACHABLE
            ) from None
        raise ChatCliError(
            f"no answer from the server within {args.timeout:g} s", EXIT_CHAT_FAILED
        ) from None
    except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ChatCliError(
            f"cannot reach the server at {server} ({type(exc).__name__})", EXIT_UNREACHABLE
        ) from None
    except httpx.TransportError as exc:
        raise ChatCliError(
            f"connection to the server failed ({type(exc).__name__})", EXIT_UNREACHABLE
        ) from None
    except ValueError:
        raise ChatCliError("the server sent a malformed reply", EXIT_CHAT_FAILED) from None
    _print_citations(done, err)
    return EXIT_OK


def run_chat(args: argparse.Namespace) -> int:
    """Entry point of ``qwen-client chat``: returns the process exit code, never raises."""
    try:
        return ask(args, sys.stdout, sys.stderr)
    except ChatCliError as exc:
        print(f"qwen-client chat: error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
