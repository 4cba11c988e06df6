"""ASGI middleware: request context and access log, bearer auth, body-size limit, draining.

These are plain ASGI classes rather than ``BaseHTTPMiddleware`` so that a request can be refused
before its body is read (auth, size) and so streaming responses pass through untouched.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import ApiKeyVerifier
from .errors import Unauthorized

access_log = logging.getLogger("qwen_server.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class RequestContextMiddleware:
    """Gives each request an id, refuses new work while draining, logs one line per request.

    The access line carries request id, method, path, status, latency and the shot count the
    route recorded in ``request.state.shot_count`` — never headers, so never a token.
    ``observe`` (if given) receives (method, route, status, seconds) for metrics.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        run: Any,
        observe: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        # ``run`` is the app's ServerState: ``draining`` flag and ``inflight`` counter.
        self.app = app
        self.run = run
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = incoming.decode("latin-1") if incoming else ""
        if not _SAFE_REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        counted = scope["path"] != "/health"
        if counted:
            self.run.inflight += 1
        try:
            if self.run.draining and counted:
                response = JSONResponse(
                    {"detail": "server is shutting down; retry on another server"},
                    status_code=503,
                    headers={"Retry-After": "5"},
                )
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if counted:
                self.run.inflight -= 1
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "(unmatched)"
            shots = scope.get("state", {}).get("shot_count")
            access_log.info(
                "rid=%s %s %s status=%d latency_ms=%.1f%s",
                rid,
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000.0,
                f" shots={shots}" if shots is not None else "",
            )
            if self.observe is not None:
                self.observe(scope["method"], route_path, status, elapsed)


class AuthMiddleware:
    """Requires ``Authorization: Bearer <key>`` on every path except the public ones.

    Auth sits in front of routing, so unknown paths also answer 401 to strangers (the route
    map is not disclosed) and a stranger's upload is refused before its body is read.
    """

    def __init__(self, app: ASGIApp, *, verifier: ApiKeyVerifier, public: set[str]) -> None:
        self.app = app
        self.verifier = verifier
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        try:
            self.verifier.check_header(_header(scope, b"authorization"))
        except Unauthorized as exc:
            response = JSONResponse(
                {"detail": exc.message}, status_code=exc.status_code, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, whether Content-Length is honest or absent.

    A declared length over the limit is refused before reading; otherwise bytes are counted as
    they arrive and reading stops with 413 the moment the limit is passed, so a lying or
    chunked client cannot make the server buffer more than the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        mb = self.max_bytes / 1_048_576
        return f"request body exceeds the limit of {mb:g} MB (server.max_body_mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await JSONResponse({"detail": "invalid Content-Length header"}, 400)(
                    scope, receive, send
                )
                return
            if length > self.max_bytes:
                await JSONResponse({"detail": self._too_large()}, 413)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Starlette's HTTPException passes through FastAPI's body parsing unchanged.
                    raise HTTPException(status_code=413, detail=self._too_large())
            return message

        await self.app(scope, limited_receive, send)
