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
    live = engine if engine is not None and engine.ready else None
    ready = live is not None
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
    gpus = live.gpu_info() if live is not None else []
    return HealthResponse(
        status=status,
        model=live.model_id if live is not None else _configured_model(settings),
        version=__version__,
        device=live.device if live is not None else "none",
        placement=live.placement if live is not None else None,
        replicas=live.replicas if live is not None else 0,
        gpu_count=len(gpus),
        gpus=gpus,
        queue_depth=live.queue_depth if live is not None else 0,
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
