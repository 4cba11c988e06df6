"""The job API's models: ``JobOptions`` (what a caller may set, mapped onto the client's
``ExtractOptions`` with the ``analyze`` CLI's names and defaults) and ``JobStatus``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from client.options import (
    DETECTORS,
    AttributeRequest,
    AudioOptions,
    DetectionOptions,
    ExtractOptions,
    SamplingOptions,
)

from ..contract.constants import SESSION_ID_RULE
from ..errors import InvalidInput

JobState = Literal["queued", "decoding", "analysing", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})

_D = DetectionOptions()
_S = SamplingOptions()


class JobOptions(BaseModel):
    """Options of a film job; the names and defaults of ``qwen-client analyze``'s flags."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(
        None, description=f"Session the results go to (default job-<job_id>); {SESSION_ID_RULE}"
    )
    title: str | None = Field(None, max_length=500, description="Default: the file name")
    detector: Literal[DETECTORS] = Field(_D.detector, description="PySceneDetect detector")  # type: ignore[valid-type]
    threshold: float | None = Field(None, description="Detector threshold (null: its default)")
    min_shot_seconds: float = Field(_D.min_shot_seconds, ge=0, le=3600)
    frames_per_shot: int = Field(_S.frames_per_shot, ge=1)
    audio: bool = Field(True, description="Audio features per shot")
    transitions: bool = Field(True, description="Dissolves, fades and black (as analyze)")
    attributes: list[str] | None = Field(
        None, description="Attribute names to score (null: the server's vocabulary)"
    )

    def extract_options(self) -> ExtractOptions:
        """The client's ExtractOptions, built as ``extract_options_from_args`` builds them."""
        try:
            return ExtractOptions(
                detection=DetectionOptions(
                    detector=self.detector,
                    threshold=self.threshold,
                    min_shot_seconds=self.min_shot_seconds,
                    transitions=self.transitions,
                ),
                sampling=SamplingOptions(
                    frames_per_shot=self.frames_per_shot,
                    candidates=max(SamplingOptions().candidates, 8 * self.frames_per_shot),
                ),
                audio=AudioOptions(enabled=self.audio),
            )
        except ValueError as exc:
            raise InvalidInput(f"options: {exc}") from None

    def attribute_request(self) -> AttributeRequest | None:
        """The requested attributes as the client's AttributeRequest (None: all)."""
        if self.attributes is None:
            return None
        try:
            return AttributeRequest.from_names(self.attributes, "options.attributes")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None


class JobSource(BaseModel):
    """Where the film came from: an upload or a path under ``jobs.media_roots``."""

    kind: Literal["upload", "path"]
    name: str = Field(..., description="The file name (never the server path)")


class JobStatus(BaseModel):
    """A job's state and progress (``GET /jobs/{id}``, each SSE event)."""

    job_id: str
    state: JobState
    source: JobSource
    session_id: str
    title: str | None
    options: dict[str, Any]
    frames_decoded: int = 0
    frames_total: int | None = None
    shots_found: int = 0
    shots_analysed: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    error: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    node: str | None = Field(
        None, description="The node (jobs.node_id) running the job, or that ran it last"
    )
    cancel_requested: bool = Field(
        False, description="A cancel was asked for; the node running the job acts on it"
    )
    purged_at: str | None = Field(
        None, description="When the job's files were removed (DELETE /jobs/{id}?purge=true)"
    )


class JobCreated(BaseModel):
    """The 202 answer to ``POST /jobs``."""

    job_id: str
    state: JobState
    session_id: str
    urls: dict[str, str]


class JobPage(BaseModel):
    """One page of ``GET /jobs``, newest first."""

    jobs: list[JobStatus]
    total: int
    limit: int
    offset: int
