"""The Serve ingress: the FastAPI app ``create_app`` builds, over a ``RemoteEngine``.

Auth, limits, validation, routes, sessions and chat are the single-box server's code unchanged;
only the engine is remote. The app is built on the replica (Serve's late-bound
``__serve_build_asgi_app__``), so nothing of it is pickled, and Serve runs its lifespan (store
opened, decode pool, engine poll started; drain and close on shutdown).

Each response names the engine replicas that analysed it in ``X-Qwen-Engine-Replica``
(comma-separated Serve replica ids; absent when no engine was involved) and, when a call was
sent again because its replica was lost under it, how many times in ``X-Qwen-Engine-Retries``:
for operators tracing a result to a box, and for the tests (work spread, nothing lost).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from .remote_engine import RemoteEngine, RequestTrace, request_trace

REPLICA_HEADER = "x-qwen-engine-replica"
RETRIES_HEADER = "x-qwen-engine-retries"


class EngineReplicaHeader:
    """Pure ASGI middleware: the engine headers from what ``RemoteEngine`` recorded.

    Pure ASGI (not ``BaseHTTPMiddleware``) so the route runs in this coroutine's context and the
    trace the adapter writes to is the one set here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = RequestTrace()
        token = request_trace.set(trace)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start" and (trace.replicas or trace.retries):
                headers = list(message.get("headers", []))
                if trace.replicas:
                    headers.append((REPLICA_HEADER.encode(), ",".join(trace.replicas).encode()))
                if trace.retries:
                    headers.append((RETRIES_HEADER.encode(), str(trace.retries).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            request_trace.reset(token)


def build_ingress_app(settings: Settings, engine_handle: Any) -> tuple[FastAPI, RemoteEngine]:
    """``create_app`` with a ``RemoteEngine`` over ``engine_handle`` and the replica header."""
    from ..engine.checkpoint import model_display_id
    from ..http.app import create_app

    engine = RemoteEngine(
        engine_handle,
        model_id=model_display_id(settings),
        retry_attempts=settings.ray.retry_attempts,
        wait_ready_s=settings.server.admission_wait_s,
    )
    app = create_app(settings, engine=engine)
    app.add_middleware(EngineReplicaHeader)  # outermost: sees every response
    return app, engine


@serve.ingress()
class Ingress:
    """The HTTP front of the Serve application (one per node in a cluster, see the README)."""

    def __init__(self, settings: Settings, engine_handle: Any) -> None:
        from ..__main__ import configure_logging

        configure_logging(settings.server.log_level)
        self._settings = settings
        self._engine_handle = engine_handle
        self._app: FastAPI | None = None

    async def __serve_build_asgi_app__(self) -> FastAPI:
        """The app, once an engine replica answered (bounded by server.admission_wait_s).

        Serve routes to this front only after it returns, so a front started by a redeploy
        does not answer "still loading" while serving replicas exist (the routes check
        ``engine.ready`` before anything else); with none yet (first start) it returns after
        the bound and answers 503 until one is up, like the single box while loading."""
        self._app, engine = build_ingress_app(self._settings, self._engine_handle)
        await engine.wait_ready()
        return self._app

    def engine_stats(self) -> dict[str, Any]:
        """This front's ``RemoteEngine.stats()`` (replicas seen, what went where, retries and
        replicas lost under a call), through a handle: operators and tests."""
        return self._app.state.engine.stats() if self._app is not None else {}
