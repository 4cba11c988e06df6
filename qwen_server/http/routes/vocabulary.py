"""``GET /vocabulary``: the attributes shots are scored on unless a request names its own.

Authenticated like every route but ``/health``: a pipeline reads it once to learn the server's
attribute names, their descriptions and evidence, and the evidence channels it may use in
``{name, description, evidence}`` definitions of its own.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...contract.analysis import VocabularyEntry, VocabularyResponse
from ...contract.vocabulary import EVIDENCE_CHANNELS, MAX_ATTRIBUTES

router = APIRouter(tags=["analysis"])


@router.get(
    "/vocabulary",
    response_model=VocabularyResponse,
    responses={401: {"description": "Missing or invalid bearer key"}},
    summary="The server's attribute vocabulary and the evidence channels",
)
async def get_vocabulary(request: Request) -> VocabularyResponse:
    """The attributes every shot gets when its request names none, in output order."""
    analysis = request.app.state.settings.analysis
    return VocabularyResponse(
        attributes=[VocabularyEntry(**a) for a in analysis.vocabulary.describe()],
        evidence_channels=dict(EVIDENCE_CHANNELS),
        max_attributes=MAX_ATTRIBUTES,
        source="file" if analysis.attributes_file is not None else "default",
    )
