"""``ServerPool``: spreading batches over the analysis servers, retries and failover.

``ServerPool`` sends each batch to the least busy live server. Transient failures (no
connection, timeouts, a dropped connection, 408/425/429/5xx) are retried, on whichever server is
free first, after a capped exponential backoff with jitter or the server's ``Retry-After``.
A server that keeps failing leaves the rotation while others carry on; the last server left is
waited for up to ``PostingOptions.retry_for`` seconds (a single server restarting does not
abort the film; the progress line says "waiting for server"), and only then does the run fail
(``ServerUnreachable``, exit 3). A 401 is never retried: the token is wrong everywhere, so the
run stops at once (``AuthFailed``). Other 4xx answers mean the request itself is wrong, and are
not retried either (``RequestRejected``; a 422 about the requested attributes names the
attribute). Answers are checked by ``client.api.responses`` (exactly the requested attributes).

Every socket the pool opens is remembered (``client.api.transport``), so ``abort`` (a failed or
interrupted run) can shut them down: a thread blocked reading an answer wakes at once with an
error instead of holding the process for up to the read timeout, and every posting thread can be
joined before exit.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from client.api.bodies import batch_body, error_detail, parse_retry_after
from client.api.responses import BatchResult, parse_batch_answer, rejection
from client.api.transport import AbortableBackend, abortable_transport
from client.errors import AuthFailed, ServerUnreachable
from client.options import AttributeRequest, PostingOptions

log = logging.getLogger("client.api")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Answers that say "no server is serving here right now" (a proxy without its backend, a
# server still loading): like a refused connection they are bounded by time, not attempts.
UNAVAILABLE_STATUS = frozenset({502, 503, 504})


@dataclass
class ServerState:
    """Book-keeping of one server in the rotation."""

    url: str
    client: httpx.Client
    in_flight: int = 0
    requests: int = 0
    failures: int = 0  # consecutive hard failures
    failing_since: float | None = None
    cooldown_until: float = 0.0
    alive: bool = True
    last_error: str = ""
    stats: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})


class ServerPool:
    """The servers of one run and the logic to post batches to them (thread-safe)."""

    def __init__(
        self,
        urls: Sequence[str],
        token: str | None,
        options: PostingOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.options = options or PostingOptions()
        o = self.options
        timeout = httpx.Timeout(
            connect=o.connect_timeout, read=o.read_timeout, write=o.write_timeout, pool=None
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._has_token = bool(token)
        limits = httpx.Limits(
            max_connections=o.in_flight + 2, max_keepalive_connections=o.in_flight
        )
        self._backend = AbortableBackend()
        self.servers = [
            ServerState(
                url=u.rstrip("/"),
                client=httpx.Client(
                    base_url=u.rstrip("/"),
                    timeout=timeout,
                    headers=headers,
                    transport=abortable_transport(limits, self._backend),
                ),
            )
            for u in dict.fromkeys(urls)
        ]
        self._cond = threading.Condition()
        self._rng = rng or random.Random()
        self._closed = False
        self._waiting = False  # every live server is failing: waiting for one to come back
        # Called with "waiting for server ..." while no server answers, and None when one does
        # again (the CLI shows it on the progress line).
        self.on_wait: Callable[[str | None], None] | None = None

    # --- rotation ---------------------------------------------------------------------------
    def _acquire(self) -> ServerState:
        """The least busy live server that is not cooling down (waits if all are)."""
        with self._cond:
            while True:
                if self._closed:
                    raise ServerUnreachable("the run was stopped")
                live = [s for s in self.servers if s.alive]
                if not live:
                    raise ServerUnreachable(self._none_left_message())
                now = time.monotonic()
                ready = [s for s in live if s.cooldown_until <= now]
                if ready:
                    server = min(
                        ready, key=lambda s: (s.in_flight, s.requests, self.servers.index(s))
                    )
                    server.in_flight += 1
                    server.requests += 1
                    return server
                self._cond.wait(max(0.01, min(s.cooldown_until for s in live) - now))

    def _release(self, server: ServerState) -> None:
        with self._cond:
            server.in_flight -= 1
            self._cond.notify_all()

    def _none_left_message(self) -> str:
        parts = [f"{s.url}: {s.last_error or 'failed'}" for s in self.servers]
        return "no server left: " + "; ".join(parts)

    def _notify_wait(self, message: str | None) -> None:
        callback = self.on_wait
        if callback is not None:
            with contextlib.suppress(Exception):  # progress display must never break a run
                callback(message)

    def _succeeded(self, server: ServerState) -> None:
        with self._cond:
            server.failures = 0
            server.failing_since = None
            server.stats["ok"] += 1
            was_waiting, self._waiting = self._waiting, False
        if was_waiting:
            log.warning("server %s answers again; carrying on", server.url)
            self._notify_wait(None)

    def _backoff(self, server: ServerState, retry_after: float | None) -> float:
        """Seconds before the server's next attempt: its Retry-After (capped), else a capped
        exponential backoff over its consecutive hard failures, with jitter."""
        o = self.options
        if retry_after is not None:
            return min(retry_after, o.max_retry_after)
        exp = min(o.backoff_cap, o.backoff_base * 2 ** max(0, server.failures - 1))
        return exp * self._rng.uniform(0.5, 1.0)  # jitter spreads retries apart

    def _failed(
        self, server: ServerState, error: str, retry_after: float | None, hard: bool
    ) -> None:
        """Record a transient failure and schedule the server's next attempt.

        A hard failure (no answer, or a 5xx without Retry-After) counts towards
        ``max_consecutive_failures`` while another server is left; the last server is kept
        for ``retry_for`` seconds from its first failure, its attempts spaced by the backoff
        but never later than that deadline, so the run fails in bounded time.
        """
        o = self.options
        wait_message = None
        with self._cond:
            now = time.monotonic()
            server.stats["failed"] += 1
            server.last_error = error
            if server.failing_since is None:
                server.failing_since = now
            if hard:
                server.failures += 1
            delay = self._backoff(server, retry_after)
            others = any(s.alive and s is not server for s in self.servers)
            failing_for = now - server.failing_since
            if not hard:
                out = failing_for >= o.max_unavailable_seconds
            elif others:
                out = server.failures >= o.max_consecutive_failures
            else:
                out = failing_for >= o.retry_for
                delay = min(delay, max(0.0, server.failing_since + o.retry_for - now))
            server.cooldown_until = now + delay
            if out and server.alive:
                server.alive = False
                left = sum(1 for s in self.servers if s.alive)
                log.warning(
                    "server %s left the rotation after repeated failures (last: %s); %d left",
                    server.url,
                    error,
                    left,
                )
            else:
                log.info("server %s: %s; retrying in %.1f s", server.url, error, delay)
                if hard and not others and server.alive:
                    wait_message = (
                        f"waiting for server {server.url} "
                        f"({failing_for:.0f} of {o.retry_for:.0f} s; last: {error})"
                    )
                    if not self._waiting:
                        self._waiting = True
                        log.warning(
                            "server %s is not answering (%s); waiting for server up to %.0f s",
                            server.url,
                            error,
                            o.retry_for,
                        )
            self._cond.notify_all()
        if wait_message is not None:
            self._notify_wait(wait_message)

    # --- requests ---------------------------------------------------------------------------
    def analyze_batch(
        self,
        shots: list[dict[str, Any]],
        session_id: str | None = None,
        title: str | None = None,
        attributes: AttributeRequest | None = None,
    ) -> BatchResult:
        """POST one batch to /analyze_batch, retrying and failing over as described above.
        With ``attributes``, asks for exactly those and checks every result holds exactly them
        (None: the server's vocabulary, any names)."""
        items = attributes.request_items() if attributes is not None else None
        names = attributes.names if attributes is not None else None
        body = batch_body(shots, session_id, title, items)
        ids = [s["shot_id"] for s in shots]
        last_error = ""
        attempts = 0  # failures of this batch on a server that answered (see PostingOptions)
        while attempts < self.options.max_attempts:
            server = self._acquire()
            try:
                response = server.client.post("/analyze_batch", json=body)
            except httpx.TransportError as exc:
                last_error, counts = self._transport_failure(exc)
                attempts += counts
                self._failed(server, last_error, None, hard=True)
                continue
            finally:
                self._release(server)
            status = response.status_code
            if status == 200:
                result = parse_batch_answer(response, ids, server.url, names)
                self._succeeded(server)
                return result
            if status == 401:
                raise self._auth_failed(server.url, response)
            if status in RETRYABLE_STATUS:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                last_error = f"HTTP {status}: {error_detail(response)}"
                if status not in UNAVAILABLE_STATUS and status != 429:
                    attempts += 1
                # "Come back later" answers (429, or 503 with Retry-After) do not count towards
                # leaving the rotation; the time budget max_unavailable_seconds still applies.
                hard = not (status == 429 or (status == 503 and retry_after is not None))
                self._failed(server, last_error, retry_after, hard=hard)
                continue
            raise rejection(response, ids, server.url, names)
        raise ServerUnreachable(
            f"shots {ids[0]}..{ids[-1]} failed {self.options.max_attempts} times; "
            f"last: {last_error}"
        )

    @staticmethod
    def _transport_failure(exc: httpx.TransportError) -> tuple[str, bool]:
        """(message, whether it counts as an attempt) for a request that got no answer: a
        connection never made does not count (time bounds it); a request that timed out or
        whose connection broke while the server had the batch does."""
        if isinstance(exc, httpx.ConnectTimeout):
            return f"connection timed out ({type(exc).__name__})", False
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out ({type(exc).__name__})", True
        if isinstance(exc, httpx.ConnectError):
            return f"connection failed ({type(exc).__name__}: {exc})", False
        return f"connection failed ({type(exc).__name__}: {exc})", True

    def _auth_failed(self, url: str, response: httpx.Response) -> AuthFailed:
        """The error of a 401, with a hint on where the token comes from."""
        hint = (
            "check QWEN_SERVER_TOKEN or --token-file"
            if self._has_token
            else "no token was given: set QWEN_SERVER_TOKEN or pass --token-file"
        )
        return AuthFailed(f"{url} rejected the request (401: {error_detail(response)}); {hint}")

    def health(self, check_token: bool = False) -> list[dict[str, Any]]:
        """GET /health of every server: one dict per server with ``url``, ``reachable``,
        ``http_status`` and the server's JSON (or ``error``). With ``check_token``, also asks an
        authenticated route (GET /sessions) and sets ``token_ok`` (False only on a 401).
        Never raises for a bad server."""
        out = []
        quick = httpx.Timeout(self.options.connect_timeout)
        for s in self.servers:
            entry: dict[str, Any] = {"url": s.url}
            try:
                r = s.client.get("/health", timeout=quick)
            except httpx.HTTPError as exc:
                entry.update(reachable=False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
                out.append(entry)
                continue
            entry.update(reachable=True, http_status=r.status_code)
            try:
                entry["health"] = r.json()
            except ValueError:
                entry["error"] = f"HTTP {r.status_code}: not JSON"
            if check_token:
                try:
                    auth = s.client.get("/sessions", params={"limit": 1}, timeout=quick)
                    entry["token_ok"] = auth.status_code != 401
                except httpx.HTTPError:
                    pass
            out.append(entry)
        return out

    def drop_unreachable(self) -> None:
        """Check every server (GET /health) before any work is done and take unreachable ones
        out of rotation.

        When none answers, waits for one to come up (a server being restarted) for
        ``retry_for`` seconds, asking again with a capped backoff and reporting "waiting for
        server"; raises ServerUnreachable if none has answered by then.
        """
        o = self.options
        deadline = time.monotonic() + o.retry_for
        delay = max(0.05, o.backoff_base)
        while True:
            down = []
            for entry, server in zip(self.health(), self.servers, strict=True):
                if not entry["reachable"]:
                    down.append((server, entry["error"]))
            if len(down) < len(self.servers):
                break
            detail = "; ".join(f"{s.url} ({err})" for s, err in down)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerUnreachable(f"cannot reach any server: {detail}")
            message = f"waiting for server: {detail} ({left:.0f} s left of {o.retry_for:.0f})"
            if not self._waiting:
                self._waiting = True
                log.warning(
                    "cannot reach any server yet (%s); waiting for server up to %.0f s",
                    detail,
                    o.retry_for,
                )
            self._notify_wait(message)
            with self._cond:
                if self._closed:
                    raise ServerUnreachable("the run was stopped")
                self._cond.wait(min(delay, left))
                if self._closed:
                    raise ServerUnreachable("the run was stopped")
            delay = min(o.backoff_cap, delay * 2)
        if self._waiting:
            self._waiting = False
            log.warning("a server answers; carrying on")
            self._notify_wait(None)
        for server, err in down:
            server.alive = False
            server.last_error = f"unreachable ({err})"
            log.warning("server %s is unreachable (%s); not using it", server.url, err)

    def summary(self) -> dict[str, dict[str, int]]:
        """Per-server counts of successful and failed requests."""
        return {s.url: dict(s.stats) for s in self.servers}

    def abort(self) -> None:
        """Stop the run's requests now: wake threads waiting for a server and shut down every
        open connection, so requests in flight fail at once (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._backend.abort()

    def close(self) -> None:
        """Abort whatever is still in flight and close the HTTP connections."""
        self.abort()
        for s in self.servers:
            s.client.close()
