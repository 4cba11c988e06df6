"""Drills on the HTTP front (real server on loopback, raw sockets and httpx).

Auth over every registered route, OPTIONS, connections that never finish a request, the
connection cap, a 401 that must not read the body, and access-log forging.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import TEST_API_KEY, LiveServer, run_server, test_settings
from tests.integration.test_server_api import _registered_routes

PUBLIC = {"/health"}
PARSERS = ["h11", "httptools"]


@pytest.fixture
def front(tiny_model_dir, tmp_path):
    """``with front(http="h11", header_timeout_s=1): ...``: a real server, chosen parser."""

    def start(http: str = "auto", **server: object):
        return run_server(test_settings(tiny_model_dir, tmp_path, server=server), http=http)

    return start


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _assert_health(server: LiveServer) -> None:
    r = httpx.get(server.url + "/health", timeout=30)
    assert r.status_code == 200, r.text


@contextmanager
def _sockets(server: LiveServer, n: int) -> Iterator[list[socket.socket]]:
    socks = [socket.create_connection(("127.0.0.1", _port(server)), timeout=10) for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (EOF or reset); never blocks."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        while True:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _wait_closed(socks: list[socket.socket], deadline_s: float) -> list[socket.socket]:
    """Wait until every socket is closed by the server; return those still open at deadline."""
    end = time.monotonic() + deadline_s
    open_ = list(socks)
    while open_ and time.monotonic() < end:
        open_ = [s for s in open_ if not _closed_by_server(s)]
        if open_:
            select.select(open_, [], [], 0.2)
    return open_


def _read_response(sock: socket.socket, deadline_s: float = 30) -> tuple[bytes, bool]:
    """Read what the server sends until it closes (or deadline): (bytes, closed_by_server)."""
    sock.settimeout(deadline_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except TimeoutError:
        return data, False


# --- auth matrix -----------------------------------------------------------------------------


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


def test_auth_matrix_over_every_registered_route(server: LiveServer) -> None:
    routes = [
        (_concrete(p), sorted(m | {"OPTIONS"})) for p, m in _registered_routes(server.app.routes)
    ]
    assert {"/analyze", "/analyze_batch", "/chat", "/metrics", "/sessions", "/health"} <= {
        p for p, _ in routes
    }
    bad_keys = [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic eDp5"}]
    key = {"Authorization": f"Bearer {TEST_API_KEY}"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for path, methods in routes:
            for method in methods:
                for headers in bad_keys:
                    r = c.request(method, path, headers=headers, json={})
                    if path in PUBLIC:
                        assert r.status_code in (200, 204), (method, path, r.status_code)
                        continue
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert r.headers["www-authenticate"] == "Bearer"
                    assert r.headers["connection"] == "close"
                # With the key, OPTIONS lists the methods the path really serves.
                if method == "OPTIONS":
                    r = c.options(path, headers=key)
                    assert r.status_code == 204, (path, r.status_code)
                    served = {m for p, ms in routes if p == path for m in ms}
                    assert set(r.headers["allow"].split(", ")) == served, path
                    for other in served - {"OPTIONS"}:  # each listed method is really served
                        got = c.request(other, path, headers=key, json={}).status_code
                        assert got != 405, (other, path)
        assert c.options("/no-such-route", headers=key).status_code == 404
        assert c.options("/no-such-route").status_code == 401
    _assert_health(server)


def test_openapi_documents_what_the_front_answers(server: LiveServer) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    protected = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            if path in PUBLIC:
                assert op["security"] == [] and "401" not in codes
                continue
            protected += 1
            assert {"401", "503"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= codes, (method, path)
    assert protected >= 7 and "401" in spec["paths"]["/metrics"]["get"]["responses"]
    chat = spec["components"]["schemas"]["ChatRequest"]
    assert [b["required"] for b in chat["oneOf"]] == [["session_id"], ["results"]]


# --- connections that never finish a request -------------------------------------------------


@pytest.mark.parametrize("http", PARSERS)
def test_silent_and_half_sent_connections_are_closed(front, http: str) -> None:
    with (
        front(http, header_timeout_s=1.0, keepalive_timeout_s=1.0) as live,
        _sockets(live, 60) as socks,
    ):
        for s in socks[:20]:  # half-sent headers, never finished
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for s in socks[20:30]:  # a complete request, then silence on the kept-alive connection
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        _assert_health(live)  # the monitor is served while they are open
        still_open = _wait_closed(socks, deadline_s=60)
        assert not still_open, f"{len(still_open)} of {len(socks)} connections still open"
        _assert_health(live)


def test_connection_cap_closes_idle_ones_and_health_stays_up(front) -> None:
    with front(max_connections=20, header_timeout_s=600) as live, _sockets(live, 100) as socks:
        # Silent sockets beyond the cap are made room for, oldest first: never more than the
        # cap stay open, and each monitor request (a new connection) is answered.
        for _ in range(5):
            _assert_health(live)
        end = time.monotonic() + 60
        open_ = list(socks)
        while time.monotonic() < end:
            open_ = [s for s in open_ if not _closed_by_server(s)]
            if len(open_) <= 20:
                break
            time.sleep(0.05)
        assert len(open_) <= 20, f"{len(open_)} silent connections still open (cap 20)"


def test_new_connection_gets_503_when_every_connection_is_busy(front) -> None:
    with front(max_connections=1, header_timeout_s=600) as live:
        with _sockets(live, 1) as (busy,):
            # A request in progress: headers with the key, body still coming.
            busy.sendall(
                b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + TEST_API_KEY.encode() + b"\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            end = time.monotonic() + 30
            while not live.app.state.run.inflight and time.monotonic() < end:
                time.sleep(0.02)
            assert live.app.state.run.inflight == 1
            with _sockets(live, 1) as (late,):
                late.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                reply, closed = _read_response(late)
            assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
            assert b"retry-after: 2" in reply.lower() and closed
        # Once the busy connection is gone, the monitor gets through again.
        end = time.monotonic() + 30
        while live.app.state.run.inflight and time.monotonic() < end:
            time.sleep(0.02)
        _assert_health(live)


# --- a 401 must not read the body ------------------------------------------------------------


@pytest.mark.parametrize("http", PARSERS)
def test_401_closes_the_connection_without_reading_the_body(front, http: str) -> None:
    with front(http) as live, _sockets(live, 1) as (s,):
        s.sendall(
            b"POST /analyze_batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n" + b"[" * 4096
        )
        reply, closed = _read_response(s)
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
        assert b"connection: close" in reply.lower()
        assert closed, "the server kept the connection open after the 401"
        _assert_health(live)


def test_401_stops_a_client_that_keeps_sending(front) -> None:
    """A stranger streaming a huge body is cut off after a bounded linger, not read to the end."""
    with front() as live, _sockets(live, 1) as (s,):
        s.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n")
        sent, chunk = 0, b"\0" * 65536
        s.settimeout(60)
        end = time.monotonic() + 60
        closed = False
        try:
            while time.monotonic() < end:
                sent += s.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            closed = True  # the server closed (a send timeout would not count)
        assert closed, "the server was still reading the refused body after 60 s"
        assert sent < 256 * 1_048_576, f"the server read {sent} bytes of a refused body"
        _assert_health(live)


def test_wrong_key_upload_gets_a_clean_401(server: LiveServer) -> None:
    """A real client posting a big batch with a wrong key reads the 401, not a reset."""
    body = b'{"shots": [' + b" " * (16 * 1_048_576) + b"]}"
    headers = {"Authorization": "Bearer wrong", "Content-Type": "application/json"}
    r = httpx.post(server.url + "/analyze_batch", content=body, headers=headers, timeout=60)
    assert r.status_code == 401
    _assert_health(server)


# --- access log ------------------------------------------------------------------------------


def test_control_characters_in_the_path_cannot_forge_log_lines(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qwen_server.access")
    raw = b"/a%0d%0aINFO%20qwen_server.access:%20rid=forged%20GET%20/x%20status=200%00%1b%5b2J"
    with _sockets(server, 1) as (s,):
        s.sendall(
            b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + TEST_API_KEY.encode() + b"\r\n\r\n"
        )
        reply, _ = _read_response(s)
    assert reply.startswith(b"HTTP/1.1 404"), reply[:200]
    end = time.monotonic() + 10
    lines: list[str] = []
    while not lines and time.monotonic() < end:
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.name == "qwen_server.access" and "forged" in r.getMessage()
        ]
        time.sleep(0.02)
    assert len(lines) == 1, lines
    line = lines[0]
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in line), repr(line)
    assert "/a\\x0d\\x0aINFO qwen_server.access: rid=forged" in line
    assert "\\x00\\x1b[2J" in line


def test_escape_log_escapes_every_control_character() -> None:
    from qwen_server.logsafe import escape_log

    text = "".join(chr(c) for c in range(0x20)) + "\x7f\x85\u2028\u2029\\ ok é"
    out = escape_log(text)
    assert out.isprintable()
    assert out.endswith("\\\\ ok é")
    assert escape_log("\r\n") == "\\x0d\\x0a"


def test_made_up_methods_cannot_grow_the_metrics_series(front) -> None:
    # h11 passes any method token; each distinct one must not become its own metrics series.
    with front(http="h11") as live:
        for i in range(5):
            with _sockets(live, 1) as (s,):
                s.sendall(
                    f"BREW{i} /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                reply, _ = _read_response(s)
            assert reply.startswith(b"HTTP/1.1 "), reply[:100]
        with live.client() as c:
            text = c.get("/metrics").text
    assert "BREW" not in text
    assert re.search(r'qwen_requests_total\{[^}]*method="OTHER"[^}]*\} 5\.0', text), text
