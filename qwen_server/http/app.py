"""The FastAPI application factory.

``create_app(settings)`` wires settings, auth, limits, the model engine, the session store and
the chat service together. The model is loaded in the background from the lifespan so that
``/health`` can answer 503 "loading" while weights are read, then 200 once serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from .. import __version__
from ..config import Settings
from ..engine.protocol import EngineClient
from ..errors import ConfigError, QwenServerError
from ..logsafe import escape_log
from .auth import ApiKeyVerifier
from .metrics import Metrics
from .middleware import (
    AuthMiddleware,
    BodySizeLimitMiddleware,
    OptionsMiddleware,
    RequestContextMiddleware,
)

logger = logging.getLogger("qwen_server")

DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
PUBLIC_PATHS = {"/health"}

_ERROR_SCHEMA = {
    "title": "ErrorMessage",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "What was wrong"}},
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
# What the middleware can answer on any protected operation, before the route runs.
_FRONT_RESPONSES: dict[str, dict[str, Any]] = {
    "401": {
        "description": "Missing or invalid bearer key (WWW-Authenticate: Bearer; the "
        "connection is closed, the body is not read)",
        "headers": {
            "WWW-Authenticate": {"description": "Always `Bearer`", "schema": {"type": "string"}}
        },
    },
    "503": {
        "description": "Not serving: shutting down (draining), model loading, or busy "
        "(see Retry-After)",
        "headers": _RETRY_AFTER,
    },
}
# ... and on operations with a body.
_BODY_RESPONSES: dict[str, dict[str, Any]] = {
    "400": {"description": "There was an error parsing the body, or a bad Content-Length"},
    "413": {"description": "Body over server.max_body_mb (the connection is closed)"},
}


class ServerState:
    """Mutable run state shared by routes and middleware (kept on ``app.state.run``)."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.draining = False
        self.inflight = 0  # requests being handled, /health excluded (for graceful drain)
        self.load_error: str | None = None


async def _load_engine(app: FastAPI, on_fatal: Callable[[str], None] | None) -> None:
    engine: EngineClient = app.state.engine
    run: ServerState = app.state.run
    try:
        await asyncio.to_thread(engine.load)
        await engine.start()
        logger.info("model %s ready on %s (%s)", engine.model_id, engine.device, engine.placement)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # ConfigError carries a user-facing message (e.g. "model not found; set model.path").
        msg = exc.message if isinstance(exc, QwenServerError) else f"{type(exc).__name__}: {exc}"
        msg = escape_log(msg)
        run.load_error = msg
        logger.error("model failed to load: %s", msg, exc_info=not isinstance(exc, ConfigError))
        if on_fatal is not None:
            on_fatal(msg)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # FastAPI's default echoes the offending input, which for a frame is megabytes of base64.
    out = []
    for err in exc.errors():
        out.append(
            {
                "loc": list(err.get("loc", ())),
                "msg": str(err.get("msg", "invalid value")),
                "type": err.get("type", "value_error"),
            }
        )
    return out


def create_app(
    settings: Settings,
    *,
    engine: EngineClient | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the HTTP app.

    ``engine`` defaults to the Qwen2-VL ``Engine`` built from ``settings``; tests may pass one
    already built. ``on_fatal`` is called with a message when the model cannot be loaded (the
    CLI uses it to exit non-zero instead of serving 503 forever).
    Raises ConfigError when no API key is configured outside insecure development mode.
    """
    verifier = _check_auth_config(settings)
    app = FastAPI(
        title="Qwen2-VL shot analysis server",
        version=__version__,
        description=(
            "Per-shot captions and scores (suspense, darkness, ambiguity, emotional tension, "
            "intensity, motion) for film shots, fusing Qwen2-VL with measured visual and audio "
            "signals. Every route except `GET /health` needs `Authorization: Bearer <key>`."
        ),
        lifespan=_lifespan(settings, on_fatal),
        docs_url="/docs",
        redoc_url="/redoc",
    )
    _install_state(app, settings, engine)
    _install_routes(app)
    _install_error_handlers(app)
    _install_openapi(app)
    _install_middleware(app, settings, verifier)
    return app


def _check_auth_config(settings: Settings) -> ApiKeyVerifier:
    """The key verifier; ConfigError when no key is configured outside insecure development
    mode, a loud warning when running in it."""
    keys = settings.api_keys()
    if not keys and not settings.server.insecure_no_auth:
        raise ConfigError(
            "no API key configured: set QWEN_SERVER_API_KEYS or server.api_key_file "
            "(or use --insecure-no-auth for local development only)"
        )
    verifier = ApiKeyVerifier(keys)
    if not verifier.enabled:
        logger.warning(
            "INSECURE DEVELOPMENT MODE: no API key is configured, every route is open to anyone "
            "who can reach %s:%d. Never run like this on a shared network.",
            settings.server.host,
            settings.server.port,
        )
    return verifier


def _lifespan(
    settings: Settings, on_fatal: Callable[[str], None] | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up (engine built if not given, store opened, decode pool, model loaded in the
    background) and shutdown (drain, engine stopped, pool and store closed)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.engine is None:
            from ..engine.lifecycle import Engine

            app.state.engine = Engine(settings)
        app.state.engine.on_batch = app.state.metrics.observe_batch
        app.state.store.open()
        app.state.decode_pool = ThreadPoolExecutor(
            settings.server.decode_workers, thread_name_prefix="decode"
        )
        load_task = asyncio.create_task(_load_engine(app, on_fatal))
        # Film jobs left queued or running by a previous run resume now (they wait for the
        # model to finish loading before their first batch).
        await app.state.jobs.start()
        try:
            yield
        finally:
            app.state.run.draining = True
            load_task.cancel()
            await app.state.jobs.stop()  # running jobs stop, keeping their state to resume
            try:
                await app.state.engine.stop(timeout=settings.server.shutdown_timeout_s)
            except Exception:
                logger.exception("engine did not stop cleanly")
            app.state.decode_pool.shutdown(wait=False, cancel_futures=True)
            app.state.store.close()

    return lifespan


def _install_state(app: FastAPI, settings: Settings, engine: EngineClient | None) -> None:
    """What routes and middleware share on ``app.state``: settings, engine, run state, the
    session store (opened by the lifespan), the chat service and the metrics."""
    from ..chat.service import ChatService
    from ..store.factory import create_store

    app.state.settings = settings
    app.state.engine = engine
    app.state.run = ServerState()
    app.state.store = create_store(settings)  # SQLite, or PostgreSQL when store.url is set
    app.state.chat = ChatService(settings)
    from ..jobs.runner import JobManager

    app.state.jobs = JobManager(app.state, settings)
    _log_vocabulary(settings)
    app.state.metrics = Metrics(
        lambda: app.state.engine, vocabulary=settings.analysis.vocabulary.names
    )


def _log_vocabulary(settings: Settings) -> None:
    """Say which vocabulary serves, and which keys of its file were ignored (by design)."""
    analysis = settings.analysis
    names = analysis.vocabulary.names
    if analysis.attributes_file is None:
        logger.info("attribute vocabulary: the %d default attributes", len(names))
        return
    model_only = [a.name for a in analysis.vocabulary.attributes if a.evidence is None]
    logger.info(
        "attribute vocabulary: %d attributes from %s (%d scored by the model alone)",
        len(names),
        analysis.attributes_file,
        len(model_only),
    )
    if analysis.ignored_keys:
        logger.info(
            "%s: ignoring top-level keys %s (only 'attributes' is read)",
            analysis.attributes_file,
            ", ".join(analysis.ignored_keys),
        )


def _install_routes(app: FastAPI) -> None:
    from .routes import analyze, chat, health, jobs, metrics, sessions, vocabulary

    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(analyze.router)
    app.include_router(vocabulary.router)
    app.include_router(sessions.router)
    app.include_router(chat.router)
    app.include_router(jobs.router)


def _install_error_handlers(app: FastAPI) -> None:
    """The one place mapping exceptions to HTTP responses: a domain error answers its own
    status and message, invalid input 422 without echoing it, anything else 500 with the
    request id (the details go to the log only)."""

    @app.exception_handler(QwenServerError)
    async def _domain_error(request: Request, exc: QwenServerError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("%s: %s", type(exc).__name__, escape_log(exc.message))
        return JSONResponse({"detail": exc.message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_errors(exc)}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get("state", {}).get("request_id", "?")
        logger.error("unexpected error in request %s", escape_log(rid), exc_info=exc)
        return JSONResponse({"detail": f"internal server error (request id {rid})"}, 500)


def _install_openapi(app: FastAPI) -> None:
    """The OpenAPI schema with bearer security and what the middleware answers documented."""

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            _document_front(schema, public=PUBLIC_PATHS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]


def _install_middleware(app: FastAPI, settings: Settings, verifier: ApiKeyVerifier) -> None:
    public = set(PUBLIC_PATHS)
    if settings.server.public_docs:
        public |= DOCS_PATHS
    if settings.server.public_metrics:
        public.add("/metrics")
    # Added innermost first: a request passes RequestContext → Auth → Options → BodySizeLimit →
    # routes.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=int(settings.server.max_body_mb * 1_048_576),
        # Film uploads are bounded by server.max_upload_mb, counted by the route as it streams.
        exempt=frozenset({("POST", "/jobs")}),
    )
    app.add_middleware(OptionsMiddleware, router=app.router)
    app.add_middleware(AuthMiddleware, verifier=verifier, public=public)
    app.add_middleware(
        RequestContextMiddleware,
        run=app.state.run,
        observe=app.state.metrics.observe_request,
    )


def _document_front(schema: dict[str, Any], *, public: set[str]) -> None:
    """Add to the OpenAPI what the middleware answers before any route runs.

    Every protected operation gets 401 and 503 (draining); those with a body also 400 (body
    that cannot be parsed, bad Content-Length) and 413. Public paths get ``security: []``.
    Responses a route already documents keep their description and gain the error schema.
    """
    schema["components"].setdefault("schemas", {})["ErrorMessage"] = _ERROR_SCHEMA
    for path, operations in schema["paths"].items():
        for op in operations.values():
            if path in public:
                op["security"] = []
                continue
            extra = dict(_FRONT_RESPONSES)
            if "requestBody" in op:
                extra.update(_BODY_RESPONSES)
            responses = op.setdefault("responses", {})
            for code, spec in extra.items():
                merged = {**spec, **responses.get(code, {})}
                merged.setdefault("content", _ERROR_CONTENT)
                responses[code] = merged
