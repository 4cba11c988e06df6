"""GET /health: readiness for monitors and load balancers (no auth, no secrets, no paths)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from ... import __version__
from ...contract.analysis import HealthResponse
from ...engine.protocol import EngineClient

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Loading, draining or failed"}},
    summary="Readiness and load (public)",
)
def health(request: Request, response: Response) -> HealthResponse:
    """200 when the model is loaded and serving; 503 while loading, draining or failed."""
    app = request.app
    run = app.state.run
    engine: EngineClient | None = app.state.engine
    settings = app.state.settings
    # Only a category here: load errors can name local paths, which /health never shows.
    error = None
    if run.load_error:
        error = "model failed to load (details in the server log)"
    elif engine is not None and engine.failed:
        error = "engine failed (details in the server log)"
    ready = engine is not None and engine.ready
    if error:
        status = "error"
    elif run.draining:
        status = "draining"
    elif not ready:
        status = "loading"
    else:
        status = "ok"
    if status != "ok":
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    gpus = engine.gpu_info() if ready else []
    return HealthResponse(
        status=status,
        model=engine.model_id if ready else _configured_model(settings),
        version=__version__,
        device=engine.device if ready else "none",
        placement=engine.placement if ready else None,
        replicas=engine.replicas if ready else 0,
        gpu_count=len(gpus),
        gpus=gpus,
        queue_depth=engine.queue_depth if ready else 0,
        shots_served=engine.shots_served if engine is not None else 0,
        uptime_s=round(time.monotonic() - run.started_at, 1),
        error=error,
        # Reported, not a 503: analysis still serves (results come back with stored: false),
        # so a load balancer must not take this box out of rotation over its store.
        store=app.state.store.health(),
    )


def _configured_model(settings) -> str:
    path = settings.model.path
    return path.name if path is not None else settings.model.name
