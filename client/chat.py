"""Chat client: ask the server's chat about a film's results and stream the answer.

The film is a session stored on the server or a local run's results (``DIR/shots.jsonl``, the
shots sent inline). Either way the server does the chat. The answer is written to ``out`` as
it arrives; the shots it cites go to ``err``, so stdout stays just the answer. The command
line is ``client.cli.chat``.

Failures are raised as ``client.errors.ClientError`` subclasses, which the CLI prints as one
line on stderr with their exit code: 2 bad input (``UsageError``/``InputError``: arguments,
results file, token file, unknown session, request refused), 3 server unreachable
(``ServerUnreachable``), 4 authentication failed (``AuthFailed``), 5 chat provider failure or the
server failing (``ChatFailed``). The token is never printed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

from client.credentials import TOKEN_ENV
from client.errors import (
    EXIT_OK,
    AuthFailed,
    ChatFailed,
    InputError,
    ServerUnreachable,
    UsageError,
)
from client.outputs import SHOTS
from qwen_server.contract.constants import ATTRIBUTES, MAX_INLINE_SHOTS

RESULTS_FILE = SHOTS


# --- inputs ----------------------------------------------------------------------------------


def _first(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def _scores(row: dict[str, Any]) -> dict[str, int | float]:
    """A record's scores: every numeric entry of its ``attributes`` (any vocabulary: the six,
    the 38 of a trailer file, ...), in its order. Flat layouts (scores as top-level columns)
    cannot tell scores from other columns, so there only the v1 six are read. Nulls, booleans,
    text and non-finite numbers are dropped: they are not scores the server would accept."""
    attrs = row.get("attributes")
    if not isinstance(attrs, dict):
        attrs = {a: row.get(a) for a in ATTRIBUTES}
    return {str(name): value for name, value in attrs.items() if _is_score_number(value)}


def _is_score_number(value: Any) -> bool:
    """A JSON number that is finite (an int too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def load_results(path: Path) -> list[dict[str, Any]]:
    """The shots of a local run (``DIR/shots.jsonl``, or the file itself), reduced to what the
    chat uses (``_scores``: every attribute a record has). Failed shots (no caption and no
    scores) are skipped."""
    file = path / RESULTS_FILE if path.is_dir() else path
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"no results at {file} (run 'qwen-client analyze' first)") from None
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    shots: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{file} line {number}: not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("shot_id"), int):
            raise InputError(f"{file} line {number}: no integer shot_id")
        attrs = _scores(row)
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
        raise InputError(f"{file} holds no analysed shots")
    if len(shots) > MAX_INLINE_SHOTS:
        raise InputError(
            f"{file} holds {len(shots)} shots; at most {MAX_INLINE_SHOTS} can be sent inline "
            "(store the film as a session and use --session)"
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
        raise AuthFailed(
            f"authentication failed (HTTP {status}): {detail}; check ${TOKEN_ENV} or --token-file"
        )
    if status in (400, 404, 413, 422):
        raise UsageError(f"request refused (HTTP {status}): {detail}")
    retry = response.headers.get("Retry-After")
    hint = f" (retry after {retry} s)" if retry else ""
    raise ChatFailed(f"chat failed (HTTP {status}): {detail}{hint}")


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) for each Server-Sent Event; the name is "message" when not given."""
    event, data = "message", list[str]()
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
                raise ChatFailed("server sent a malformed event") from None
            if event == "error":
                if wrote:
                    out.write("\n")
                    out.flush()
                status = payload.get("status", "?")
                detail = " ".join(str(payload.get("detail", "error")).split())
                raise ChatFailed(f"chat failed mid-answer (HTTP {status}): {detail}")
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
    raise ChatFailed("the answer stream ended before it was complete")


def ask(
    server: str,
    question: str,
    token: str | None,
    *,
    session: str | None = None,
    results: Path | None = None,
    stream: bool = True,
    timeout: float = 300.0,
    out: TextIO,
    err: TextIO,
) -> int:
    """Send ``question`` about a stored ``session`` or a local run's ``results`` to ``server``
    (a checked base URL without a trailing slash) and write the answer; raise ClientError."""
    question = (question or "").strip()
    if not question:
        raise UsageError("the question is empty")
    body: dict[str, Any] = {"question": question}
    if session is not None:
        body["session_id"] = session
    else:
        assert results is not None, "a session or a results folder is required"
        body["results"] = load_results(results)

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0)) as client:
            if not stream:
                response = client.post(server + "/chat", json=body)
                _raise_for_status(response)
                done = response.json()
                print(done.get("answer", ""), file=out)
            else:
                done = _stream_answer(client, server + "/chat", body, out)
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            raise ServerUnreachable(f"cannot reach the server at {server} (timed out)") from None
        raise ChatFailed(f"no answer from the server within {timeout:g} s") from None
    except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ServerUnreachable(
            f"cannot reach the server at {server} ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"connection to the server failed ({type(exc).__name__})") from None
    except ValueError:
        raise ChatFailed("the server sent a malformed reply") from None
    _print_citations(done, err)
    return EXIT_OK
