"""The HTTP front: uvicorn settings and a hardened connection protocol, shared by CLI and tests.

uvicorn on its own lets connections be held open for free: a connection that never completes
its request headers is never closed, nothing caps how many are open (1,100 silent sockets used
up the file descriptors and ``/health`` failed, with no key needed), and after an early answer
(a 401 before the body was read) it either reads the whole body to reach the next request or
drops the connection with unread data, which resets it before the client reads the answer.

``uvicorn_config(app, settings)`` builds the one ``uvicorn.Config`` that ``qwen-server`` and the
tests both run, with a protocol that adds, per connection:

- a header timeout (``server.header_timeout_s``): from the moment the connection opens, or the
  previous response ends, the next request's headers must be complete within it, else the
  connection is closed. uvicorn's own keep-alive timeout (``server.keepalive_timeout_s``) still
  closes a connection that stays silent after a response;
- a cap (``server.max_connections``): past it, the oldest connection with no request in progress
  is closed to make room, so a flood of idle sockets cannot lock out a monitor's ``/health``;
  when every connection is busy the new one gets 503 and is closed;
- a bounded lingering close: when a response says ``Connection: close`` while the request body
  is still arriving, the server stops parsing, sends the response and FIN, and discards what
  still arrives for at most ``LINGER_S`` seconds / ``LINGER_MAX_BYTES`` bytes before closing,
  so the client can read the answer and the body is never read to its end.

``DrainingServer`` is the CLI's uvicorn server: the first SIGTERM/SIGINT drains, a second one
ends the process at once (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import signal
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError

logger = logging.getLogger("qwen_server")

LINGER_S = 2.0
LINGER_MAX_BYTES = 64 * 1_048_576  # the default server.max_body_mb: a real upload fits
FD_RESERVE = 256  # descriptors kept for model files, the store, logs and threads
_CAP_WARN_EVERY_S = 10.0
_BUSY_BODY = b'{"detail":"server has too many open connections; retry shortly"}'
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 2\r\nconnection: close\r\ncontent-length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


class FrontConfig(uvicorn.Config):
    """``uvicorn.Config`` plus the front's own limits, read by the protocol of each connection."""

    def __init__(
        self, app: Any, *, header_timeout_s: float, max_connections: int, **kw: Any
    ) -> None:
        super().__init__(app, **kw)
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.cap_warned_at = -math.inf


class _LingeringTransport:
    """Wraps the socket transport so uvicorn's ``close()`` can become a bounded lingering close.

    Everything else is passed through to the real transport.
    """

    def __init__(self, transport: asyncio.Transport, protocol: _FrontMixin) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        linger = (
            not self._closing
            and not self._transport.is_closing()
            and self._protocol.request_body_pending()
        )
        self._closing = True
        if linger:
            self._protocol.start_linger()
        else:
            self._transport.close()


class _FrontMixin:
    """Header timeout, connection cap and lingering close over a uvicorn HTTP/1.1 protocol."""

    # Provided by the uvicorn protocol class this is mixed into.
    config: FrontConfig
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._real = transport
        self._opened_at = time.monotonic()
        self._seen_cycle: Any = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._discarded = 0
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[misc]
        # uvicorn's own access line carries the raw path unescaped: qwen_server.access logs
        # each request (escaped) instead, whatever logging handlers are installed.
        self.access_log = False
        if self._admit():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > LINGER_MAX_BYTES:
                self._real.close()
            return
        super().data_received(data)  # type: ignore[misc]
        self._note_cycle()

    def eof_received(self) -> bool | None:
        if self._lingering:
            return None  # the client is done sending: let the transport close
        return super().eof_received()  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._note_cycle()
        if self.idle() and not self.transport.is_closing():
            self._arm_header_timer()

    # --- state ------------------------------------------------------------------------------

    def idle(self) -> bool:
        """True when no request is in progress (waiting for headers, or between requests)."""
        return self.cycle is None or self.cycle.response_complete

    def request_body_pending(self) -> bool:
        """True when the current request's body has not been received to its end."""
        return self.cycle is not None and self.cycle.more_body

    def start_linger(self) -> None:
        """Stop parsing, flush the response and FIN, discard input for a bounded time, close."""
        self._lingering = True
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._real.resume_reading()  # flow control may have paused it while the app waited
        if self._real.can_write_eof():
            self._real.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self._real.close)

    # --- header timeout ---------------------------------------------------------------------

    def _note_cycle(self) -> None:
        # uvicorn makes a new cycle when a request's headers are complete.
        if self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(
            self.config.header_timeout_s, self._header_timeout
        )

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.idle() and not self.transport.is_closing():
            self._real.close()

    # --- connection cap ---------------------------------------------------------------------

    def _admit(self) -> bool:
        """Enforce ``max_connections``; False when this new connection was refused."""
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        excess = len(open_) - self.config.max_connections
        if excess <= 0:
            return True
        idle = sorted(
            (c for c in open_ if c is not self and isinstance(c, _FrontMixin) and c.idle()),
            key=lambda c: c._opened_at,
        )
        # Room for this one by closing idle ones, oldest first; if there are not enough, this
        # one is refused too (it is then one of the excess itself).
        admitted = len(idle) >= excess
        victims = idle[:excess] if admitted else idle[: excess - 1]
        for victim in victims:
            victim._real.close()
        if admitted:
            action = f"closed the {len(victims)} oldest idle connection(s)"
        else:
            self._real.write(_BUSY_RESPONSE)
            self.transport.close()  # no request yet, so no linger: flush and close
            action = "refused a new connection with 503 (all others are busy)"
        now = time.monotonic()
        if now - self.config.cap_warned_at >= _CAP_WARN_EVERY_S:
            self.config.cap_warned_at = now
            logger.warning(
                "connection cap reached (server.max_connections=%d): %s",
                self.config.max_connections,
                action,
            )
        return admitted


# The mixin narrows uvicorn's loosely typed attributes; mypy cannot see they agree.
class H11FrontProtocol(_FrontMixin, H11Protocol):  # type: ignore[misc]
    """The pure-Python h11 parser with the front's limits."""


_PROTOCOLS: dict[str, type[Any]] = {"h11": H11FrontProtocol}
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    _PROTOCOLS["auto"] = H11FrontProtocol
else:

    class HttpToolsFrontProtocol(_FrontMixin, HttpToolsProtocol):  # type: ignore[misc]
        """The httptools (llhttp) parser, uvicorn's default, with the front's limits."""

    _PROTOCOLS["httptools"] = HttpToolsFrontProtocol
    _PROTOCOLS["auto"] = HttpToolsFrontProtocol


def ensure_fd_room(max_connections: int) -> None:
    """Raise the soft open-file limit to fit ``max_connections``; ConfigError if it cannot."""
    need = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ConfigError(
            f"server.max_connections={max_connections} needs {need} open files, but this "
            f"process may open at most {hard} (ulimit -Hn); lower server.max_connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def uvicorn_config(app: Any, settings: Any, *, http: str = "auto", **overrides: Any) -> FrontConfig:
    """The uvicorn configuration every server of this project runs with.

    ``http`` picks the parser ("auto": httptools when installed, else h11); ``overrides`` are
    passed to ``uvicorn.Config`` (tests give ``lifespan`` and so on). Raises ConfigError when
    the open-file limit cannot fit ``server.max_connections``.
    """
    server = settings.server
    ensure_fd_room(server.max_connections)
    kw: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "log_config": None,
        "access_log": False,  # qwen_server.access logs each request, escaped
        "ws": "none",  # no WebSocket routes: do not accept upgrades
        "http": _PROTOCOLS[http],
        "timeout_keep_alive": server.keepalive_timeout_s,
        "timeout_graceful_shutdown": max(1, math.ceil(server.shutdown_timeout_s)),
    }
    kw.update(overrides)
    return FrontConfig(
        app,
        header_timeout_s=server.header_timeout_s,
        max_connections=server.max_connections,
        **kw,
    )


class DrainingServer(uvicorn.Server):
    """First SIGTERM/SIGINT drains; a second one ends the process at once.

    Draining: ``run.draining`` is set (new requests get 503, ``/health`` says "draining"),
    requests in flight get up to ``drain_timeout_s`` to finish, then uvicorn shuts down.
    A second signal logs what is abandoned, restores the default action for that signal and
    re-raises it, so the process dies of it (exit status 143 for SIGTERM, 130 for SIGINT)
    without waiting for batches on the GPU, the engine's stop or worker threads. Sessions
    already stored are safe: each SQLite commit is atomic.
    """

    def __init__(self, config: uvicorn.Config, *, run: Any, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.run_state = run
        self.drain_timeout_s = drain_timeout_s
        self.draining_started = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.draining_started:
            logger.warning(
                "signal %d again: exiting now, abandoning %d requests in flight",
                sig,
                self.run_state.inflight,
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
            return
        self.draining_started = True
        self.run_state.draining = True
        logger.info("signal %d: draining (%d requests in flight)", sig, self.run_state.inflight)
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def _exit_when_idle(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        run = self.run_state
        while run.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if run.inflight:
            logger.warning("drain timeout: %d requests still in flight", run.inflight)
        self.should_exit = True
