"""POST /analyze and POST /analyze_batch.

A store failure never loses finished work: when the results of a batch cannot be stored under
its ``session_id`` (disk full, I/O error), the response still carries them, with
``stored: false`` and ``store_error`` saying why; the failure is counted in ``/metrics``
(``qwen_store_failures_total``), logged once per run of failures, and shown by ``/health``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ...analysis.pipeline import analyze_shots
from ...contract.analysis import AnalyzeBatchRequest, AnalyzeBatchResponse, ShotIn, ShotResult
from ...engine.protocol import EngineClient
from ...errors import NotReady
from ...store.faults import StoreError

router = APIRouter(tags=["analysis"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer key"},
    413: {"description": "Body over server.max_body_mb"},
    422: {"description": "Invalid shot data (bad image, limits, features), naming the shot"},
    503: {"description": "Model loading, queue full or shutting down (see Retry-After)"},
}


async def _run(request: Request, shots: list[ShotIn], attributes: Any = None) -> list[ShotResult]:
    app = request.app
    engine: EngineClient | None = app.state.engine
    if engine is None or not engine.ready:
        if app.state.run.load_error or (engine is not None and engine.failed):
            raise NotReady("model is not available: it failed to load or crashed (see server log)")
        raise NotReady("model is still loading")
    request.state.shot_count = len(shots)
    results = await analyze_shots(
        shots,
        settings=app.state.settings,
        engine=engine,
        pool=app.state.decode_pool,
        attributes=attributes,
    )
    app.state.metrics.observe_fallbacks(r.fallback for r in results)
    return results


@router.post(
    "/analyze_batch",
    response_model=AnalyzeBatchResponse,
    responses=_ERRORS,
    summary="Analyse a batch of shots (results in request order)",
)
async def analyze_batch(body: AnalyzeBatchRequest, request: Request) -> AnalyzeBatchResponse:
    """Caption and score every shot; with ``session_id`` the results are also stored.

    When storing fails the results are returned all the same, with ``stored: false`` and
    ``store_error``: the caller can retry the store later by posting the batch again."""
    t0 = time.perf_counter()
    results = await _run(request, body.shots, body.attributes)
    model = request.app.state.engine.model_id
    stored: bool | None = None
    store_error: str | None = None
    if body.session_id:
        try:
            await run_in_threadpool(
                request.app.state.store.save_results,
                body.session_id,
                [r.model_dump() for r in results],
                title=body.title,
                model=model,
            )
            stored = True
        except StoreError as exc:
            # The store logged it (once per run of failures); the caller keeps its results.
            stored, store_error = False, exc.message
            request.app.state.metrics.observe_store_failure("save")
    return AnalyzeBatchResponse(
        results=results,
        session_id=body.session_id,
        stored=stored,
        store_error=store_error,
        model=model,
        count=len(results),
        elapsed_ms=round((time.perf_counter() - t0) * 1000.0, 2),
    )


@router.post(
    "/analyze",
    response_model=ShotResult,
    responses=_ERRORS,
    summary="Analyse one shot",
)
async def analyze_one(shot: ShotIn, request: Request) -> ShotResult:
    """Caption and score a single shot (not stored)."""
    return (await _run(request, [shot]))[0]
