"""ASGI middleware: request context and access log, bearer auth, OPTIONS, body-size limit, drain.

These are plain ASGI classes rather than ``BaseHTTPMiddleware`` so that a request can be refused
before its body is read (auth, size) and so streaming responses pass through untouched.
A refusal sent before the body was read says ``Connection: close``: the server then stops
reading that body (``qwen_server.http.serving``) instead of reading it to its end to reach the next
request on the connection.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Router, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Unauthorized
from ..logsafe import escape_log
from .auth import ApiKeyVerifier

access_log = logging.getLogger("qwen_server.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CLOSE = {"Connection": "close"}  # on refusals sent before the request body was read


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
            # Path and method are the caller's bytes: escaped so they cannot forge log lines.
            access_log.info(
                "rid=%s %s %s status=%d latency_ms=%.1f%s",
                escape_log(rid),
                escape_log(scope["method"]),
                escape_log(scope["path"]),
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
                {"detail": exc.message},
                status_code=exc.status_code,
                headers={**exc.headers, **CLOSE},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class OptionsMiddleware:
    """Answers ``OPTIONS`` on a known path with 204 and ``Allow`` listing its real methods.

    It sits behind auth, so a stranger learns nothing of the route map (401, like every other
    request; ``OPTIONS /health`` is public like ``GET /health``). Unknown paths are 404.
    There is no CORS: no browser front end calls this API.
    """

    def __init__(self, app: ASGIApp, *, router: Router) -> None:
        self.app = app
        self.router = router
        self._compiled: list[tuple[re.Pattern[str], set[str]]] | None = None

    def _table(self) -> list[tuple[re.Pattern[str], set[str]]]:
        # Built on first use, when every route is registered. FastAPI keeps included routers
        # as wrappers (``original_router`` + prefix): descend into them.
        if self._compiled is None:
            table: list[tuple[re.Pattern[str], set[str]]] = []

            def walk(routes: list[Any], prefix: str) -> None:
                for route in routes:
                    included = getattr(route, "original_router", None)
                    if included is not None:
                        walk(included.routes, prefix + route.include_context.prefix)
                    elif getattr(route, "methods", None) and hasattr(route, "path"):
                        regex, _, _ = compile_path(prefix + route.path)
                        table.append((regex, set(route.methods)))

            walk(self.router.routes, "")
            self._compiled = table
        return self._compiled

    def allowed(self, scope: Scope) -> list[str]:
        """The methods the app serves at ``scope``'s path, and OPTIONS; [] for unknown paths."""
        methods: set[str] = set()
        for regex, route_methods in self._table():
            if regex.match(scope["path"]):
                methods |= route_methods
        return sorted(methods | {"OPTIONS"}) if methods else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        allowed = self.allowed(scope)
        if allowed:
            response: Response = Response(status_code=204, headers={"Allow": ", ".join(allowed)})
        else:
            response = JSONResponse({"detail": "Not Found"}, status_code=404)
        await response(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, whether Content-Length is honest or absent.

    A declared length over the limit is refused before reading; otherwise bytes are counted as
    they arrive and reading stops with 413 the moment the limit is passed, so a lying or
    chunked client cannot make the server buffer more than the limit.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, exempt: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # (method, path) pairs whose route enforces its own limit while streaming the body to
        # disk (POST /jobs: server.max_upload_mb).
        self.exempt = exempt

    def _too_large(self) -> str:
        mb = self.max_bytes / 1_048_576
        return f"request body exceeds the limit of {mb:g} MB (server.max_body_mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await JSONResponse({"detail": "invalid Content-Length header"}, 400, headers=CLOSE)(
                    scope, receive, send
                )
                return
            if length > self.max_bytes:
                await JSONResponse({"detail": self._too_large()}, 413, headers=CLOSE)(
                    scope, receive, send
                )
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Starlette's HTTPException passes through FastAPI's body parsing unchanged.
                    raise HTTPException(status_code=413, detail=self._too_large(), headers=CLOSE)
            return message

        await self.app(scope, limited_receive, send)
