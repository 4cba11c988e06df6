"""Request and response models of ``/sessions`` (stored film results).

Kept apart from ``analysis`` (the v1 analysis contract) because these belong to the session
store; the shapes are documented in the README. ``/chat`` models are in ``chat``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
)

from .constants import (
    SESSION_ID_PATTERN,
    SESSION_ID_RULE,
)

SessionId = Annotated[
    str,
    Field(pattern=SESSION_ID_PATTERN, description=f"Film id: {SESSION_ID_RULE}"),
]


# --- sessions --------------------------------------------------------------------------------


class SessionSummary(BaseModel):
    """One stored film: what it is and how much of it has been analysed."""

    session_id: str = Field(..., description="Film id the results were stored under")
    title: str | None = Field(None, description="Film title or source, as last given")
    model: str = Field(..., description="Model id of the most recent batch stored")
    shot_count: int = Field(..., ge=0, description="Distinct shots stored")
    created_at: str = Field(..., description="ISO 8601 UTC, first batch stored")
    updated_at: str = Field(..., description="ISO 8601 UTC, last batch stored")


class SessionDetail(SessionSummary):
    """A session with its shot results in time order (``start_time``, then ``shot_id``).

    Shots are returned exactly as stored (``ShotResult`` objects as ``/analyze_batch`` returned
    them), so results written by an older server version still read back. Each shot keeps the
    attributes of its own latest analysis: re-analysing a shot with another vocabulary replaces
    its whole result (nothing is merged), so the shots of one session may carry different sets;
    ``attributes`` lists their union.
    """

    attributes: list[str] = Field(
        default_factory=list,
        description=(
            "Every attribute name some shot of the session carries, in order of first "
            "appearance (shots in time order, each shot's own order)"
        ),
    )

    shots: list[dict[str, Any]] = Field(
        ..., description="ShotResult objects as /analyze_batch returned them, in time order"
    )


class SessionList(BaseModel):
    """One page of sessions, most recently updated first."""

    items: list[SessionSummary] = Field(..., description="This page's sessions")
    total: int = Field(..., ge=0, description="Sessions stored in all")
    limit: int = Field(..., description="Page size asked for")
    offset: int = Field(..., description="Sessions skipped before this page")
