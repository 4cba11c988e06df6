"""GET /metrics: Prometheus text format (behind the key unless server.public_metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition"}},
)
def metrics(request: Request) -> Response:
    """Requests by route/status, latency and batch-size histograms, shots, queue, GPU memory."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
