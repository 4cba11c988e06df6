"""The HTTP contract (v1) as pydantic models: what callers send and what they get back.

Limits that depend on configuration (frames per shot, shots per request) are checked in
``validation``; everything that is a property of the data itself is checked here, so OpenAPI
documents it. The audio models (``AudioFeatures``, ``AudioCues``) live in ``audio`` and the strict
number types in ``numbers``; both are importable from here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from .audio import AudioCues, AudioFeatures
from .constants import MAX_SHOT_ID
from .numbers import Score, Seconds
from .vocabulary import (
    ATTRIBUTE_NAME_PATTERN,
    ATTRIBUTE_NAME_RULE,
    EVIDENCE_CHANNELS,
    MAX_ATTRIBUTES,
    MAX_DESCRIPTION_CHARS,
    VocabularyError,
    check_description,
    check_evidence,
    check_name,
)

ShotId = Annotated[
    int,
    Strict(),
    Field(ge=0, le=MAX_SHOT_ID, description="Caller's shot number, unique per request"),
]


def duplicate_ids(ids: Iterable[int]) -> list[int]:
    """The ids that occur more than once, sorted."""
    counts = Counter(ids)
    return sorted(i for i, n in counts.items() if n > 1)


AttributeName = Annotated[
    str, Field(pattern=ATTRIBUTE_NAME_PATTERN, description=f"Attribute name: {ATTRIBUTE_NAME_RULE}")
]


class AttributeDefinition(BaseModel):
    """An attribute defined by the caller (or a known one with the caller's description)."""

    model_config = ConfigDict(extra="forbid")

    name: AttributeName
    description: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_DESCRIPTION_CHARS,
        description="One line the model reads; required unless the server knows the name",
    )
    evidence: str | None = Field(
        None,
        description=(
            "Measured signal to fuse with: one of " + ", ".join(EVIDENCE_CHANNELS) + "; null or "
            "absent for the model alone (absent keeps a known attribute's evidence)"
        ),
    )

    def as_request_item(self) -> dict[str, Any]:
        """The mapping ``resolve_requested`` reads (``evidence`` only when it was sent)."""
        return self.model_dump(exclude_unset=True)


def _check_requested(value: Any) -> Any:
    """One clear message per bad item (``attributes[2]: invalid attribute name 'Humor' ...``)
    instead of pydantic's report of every branch of the name-or-definition union."""
    if not isinstance(value, list):
        return value  # the list type's own error says what is wrong
    try:
        for i, item in enumerate(value):
            at = f"attributes[{i}]"
            if isinstance(item, str):
                check_name(item, at)
            elif isinstance(item, dict):
                unknown = sorted(
                    str(k) for k in item if k not in ("name", "description", "evidence")
                )
                if unknown:
                    raise VocabularyError(
                        at, f"unknown keys {unknown} (allowed: name, description, evidence)"
                    )
                check_name(item.get("name"), at)
                if item.get("description") is not None:
                    check_description(item["description"], at)
                if "evidence" in item:
                    check_evidence(item["evidence"], at)
            else:
                raise VocabularyError(at, "must be an attribute name or {name, description}")
    except VocabularyError as exc:
        raise ValueError(str(exc)) from None
    return value


RequestedAttributes = Annotated[
    list[AttributeName | AttributeDefinition],
    BeforeValidator(_check_requested),
    Field(
        min_length=1,
        max_length=MAX_ATTRIBUTES,
        description=(
            "Attributes to score, in output order: names from the server's vocabulary (GET "
            "/vocabulary) and/or {name, description, evidence?} definitions; absent = the "
            f"server's whole vocabulary. At most {MAX_ATTRIBUTES}, unique"
        ),
    ),
]


# Frames sampled from a shot's clip when the shot names no frames_per_shot: the client's default.
CLIP_FRAMES_DEFAULT = 5


class ShotIn(BaseModel):
    """One shot: its sampled frames in time order plus optional audio features and timing."""

    model_config = ConfigDict(extra="ignore")

    shot_id: ShotId
    images: list[str] | None = Field(
        None,
        min_length=1,
        description=(
            "Base64 JPEG or PNG frames in time order (data: URLs accepted); exactly one of "
            "images and video"
        ),
    )
    video: str | None = Field(
        None,
        min_length=1,
        description=(
            "Base64 of a short clip of the shot in any container the server's PyAV reads (MP4, "
            "WebM, MKV, ...; data: URLs accepted), instead of images: the server samples "
            "frames_per_shot frames from it with the client's rule. At most server.max_clip_mb "
            "decoded and server.max_clip_seconds long; its audio is not analysed"
        ),
    )
    frames_per_shot: int | None = Field(
        None,
        strict=True,
        ge=1,
        description=(
            f"With video: frames sampled from the clip (default {CLIP_FRAMES_DEFAULT}, at most "
            "server.max_images_per_shot)"
        ),
    )
    audio_features: AudioFeatures | None = Field(
        None, description="Per-shot audio features; absent = analyse from images only"
    )
    start_time: Seconds | None = Field(
        None, description="Seconds from the film's start (0..604800, i.e. at most 7 days)"
    )
    end_time: Seconds | None = Field(
        None, description="Seconds from the film's start (0..604800, i.e. at most 7 days)"
    )
    duration: Seconds | None = Field(
        None, description="Seconds (0..604800); derived from start/end when absent"
    )
    attributes: RequestedAttributes | None = Field(
        None,
        description=(
            "This shot's attributes (overrides the request's); absent = the request's, else the "
            "server's vocabulary"
        ),
    )

    @model_validator(mode="after")
    def _one_frame_source(self) -> ShotIn:
        if (self.images is None) == (self.video is None):
            raise ValueError(f"shot {self.shot_id}: send exactly one of images or video")
        if self.frames_per_shot is not None and self.video is None:
            raise ValueError(f"shot {self.shot_id}: frames_per_shot applies to video only")
        return self

    @model_validator(mode="after")
    def _times_consistent(self) -> ShotIn:
        if self.start_time is not None and self.end_time is not None:
            if self.end_time < self.start_time:
                raise ValueError(
                    f"end_time ({self.end_time}) is before start_time ({self.start_time})"
                )
            if self.duration is None:
                self.duration = round(self.end_time - self.start_time, 6)
        return self


class AnalyzeBatchRequest(BaseModel):
    """A batch of shots, optionally stored under a film session."""

    session_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Film id: letters, digits, '.', '_', '-'; up to 128 characters",
    )
    title: str | None = Field(
        None, max_length=500, description="Film title or source, stored with the session"
    )
    shots: list[ShotIn] = Field(
        ..., min_length=1, description="Shots to analyse (at most server.max_shots_per_request)"
    )
    attributes: RequestedAttributes | None = Field(
        None,
        description="Attributes for every shot without its own; absent = the server's vocabulary",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> AnalyzeBatchRequest:
        dups = duplicate_ids(s.shot_id for s in self.shots)
        if dups:
            raise ValueError(f"duplicate shot_id values: {dups[:10]}")
        return self


AttributeScores = Annotated[
    dict[str, Score],
    Field(description="Attribute name -> score in [0, 1], in the requested order"),
]


class MeasuredSignals(BaseModel):
    """Signals measured from the decoded frames, each in [0, 1]."""

    luminance: Score = Field(..., description="Mean luma of the frames (0 black, 1 white)")
    darkness: Score = Field(..., description="Measured darkness derived from luminance")
    motion: Score = Field(..., description="Mean normalised inter-frame difference")
    contrast: Score = Field(..., description="Mean luma standard deviation, normalised")
    saturation: Score = Field(..., description="Mean HSV saturation")


class Timings(BaseModel):
    """Milliseconds one shot spent in each stage (keys of ``timings_ms``)."""

    decode_ms: float = Field(..., description="Decoding the shot's base64 frames")
    queue_ms: float = Field(..., description="Waiting in the batching queue for a replica")
    preprocess_ms: float = Field(..., description="Image processor, prompt and token ids")
    generate_ms: float = Field(..., description="The generate call of the shot's batch")


class GenerationCounts(BaseModel):
    """Sizes of the generate call that produced the shot's answer (keys of ``generation``)."""

    batch_size: int = Field(..., description="Shots in that generate call")
    new_tokens: int = Field(..., description="Tokens the model wrote for this shot")
    prompt_tokens: int = Field(..., description="Prompt tokens of this shot, visual ones included")


class ClipInputs(BaseModel):
    """What the server read from a shot's ``video`` clip (``inputs.clip`` of its result)."""

    container: str = Field(..., description="Container format PyAV found (e.g. 'mov,mp4,...')")
    codec: str = Field(..., description="Video codec of the clip (e.g. 'h264', 'vp9')")
    width: int = Field(..., description="Frame width in pixels as decoded")
    height: int = Field(..., description="Frame height in pixels as decoded")
    frame_count: int = Field(..., description="Frames in the clip (its video packets)")
    seconds: float = Field(..., description="Length of the clip's video stream in seconds")
    positions: list[int] = Field(
        ..., description="0-based frame numbers of the sampled frames (the client's rule)"
    )


class ShotInputs(BaseModel):
    """Where a result's frames came from: the caller's images or frames sampled from a clip."""

    source: Literal["images", "video"] = Field(
        ..., description="'images' (the caller's frames) or 'video' (sampled from its clip)"
    )
    frames: int = Field(..., description="Frames the model and the measured signals saw")
    clip: ClipInputs | None = Field(None, description="With video: what was read from the clip")


class ShotResult(BaseModel):
    """The analysis of one shot."""

    shot_id: int = Field(..., description="The shot_id sent by the caller")
    caption: str = Field(..., description="One or two sentences describing the shot")
    attributes: AttributeScores = Field(
        ...,
        description=(
            "Fused scores, exactly the requested attributes in their order: what callers use"
        ),
    )
    audio_class: str = Field(
        ..., description="silence | speech | music | ambience | loud_action | unknown"
    )
    model_attributes: AttributeScores = Field(
        ..., description="The model's raw scores before fusion, same keys as attributes"
    )
    evidence: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Per attribute, the measured evidence fused into its score for this shot "
            "('visual:<channel>', 'audio:<channel>'); an empty list = scored by the model alone"
        ),
    )
    measured: MeasuredSignals = Field(..., description="Signals measured from the frames")
    inputs: ShotInputs | None = Field(
        None,
        description="Where the frames came from (images, or sampled from a video clip)",
    )
    audio: AudioCues | None = Field(None, description="Audio cues; absent without audio features")
    start_time: float | None = Field(None, description="Echo of the shot's start_time")
    end_time: float | None = Field(None, description="Echo of the shot's end_time")
    duration: float | None = Field(None, description="Shot duration in seconds")
    model: str = Field(..., description="Model id that produced the caption")
    timings_ms: Timings = Field(..., description="Where the shot's time went, in milliseconds")
    generation: GenerationCounts = Field(..., description="Sizes of the generate call")
    fallback: list[str] = Field(
        default_factory=list,
        description=(
            "Fields the model's answer lacked, filled with a neutral fallback instead of data: "
            "'caption' (then '(no caption)') and/or attribute names (then 0.5 in "
            "model_attributes, fused with measured signals in attributes); empty when complete"
        ),
    )


class AnalyzeBatchResponse(BaseModel):
    """Results in request order."""

    results: list[ShotResult] = Field(..., description="One result per shot, in request order")
    session_id: str | None = Field(None, description="Session the results were stored under")
    stored: bool | None = Field(
        None,
        description=(
            "With session_id: true when the results were stored, false when storing failed "
            "(the results are still here; store_error says why). Null without session_id"
        ),
    )
    store_error: str | None = Field(
        None, description="Why storing failed (e.g. 'database or disk is full'); else null"
    )
    model: str = Field(..., description="Model id that produced the captions")
    count: int = Field(..., description="Number of results")
    elapsed_ms: float = Field(..., description="Server-side time for the whole request")


class HealthResponse(BaseModel):
    """Liveness and readiness, without secrets or file paths."""

    status: str = Field(..., description="ok | loading | draining | error")
    model: str = Field(..., description="Model id (hub id or checkpoint folder name)")
    version: str = Field(..., description="Server version")
    device: str = Field(..., description="cuda | cpu | none (not loaded)")
    placement: str | None = Field(None, description="replicate | shard | cpu")
    replicas: int = Field(0, description="Model copies serving (one per GPU when replicated)")
    gpu_count: int = Field(0, description="GPUs in use")
    gpus: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per GPU: index, name, memory_used_mb, memory_total_mb, utilization_pct",
    )
    queue_depth: int = Field(0, description="Shots waiting for the model")
    shots_served: int = Field(0, description="Shots analysed since start")
    uptime_s: float = Field(0.0, description="Seconds since the process started")
    error: str | None = Field(None, description="Failure category when status is error")
    store: str = Field(
        "ok",
        description=(
            "Session store: 'ok', or 'error: <reason>' when it cannot be read or its last write "
            "failed (e.g. disk full). Does not make /health 503: analysis still works and "
            "returns results (with stored: false), so a load balancer must keep routing here"
        ),
    )


class VocabularyEntry(BaseModel):
    """One attribute of the server's vocabulary."""

    name: str = Field(..., description="Attribute name, the key in every result's attributes")
    description: str = Field(..., description="What the model is told the attribute means")
    evidence: str | None = Field(
        None, description="Evidence channel fused with the model's score; null = model alone"
    )


class VocabularyResponse(BaseModel):
    """``GET /vocabulary``: what shots are scored on when a request names no attributes."""

    attributes: list[VocabularyEntry] = Field(..., description="In output order")
    evidence_channels: dict[str, str] = Field(
        ..., description="Channel name -> what it measures (usable as an attribute's evidence)"
    )
    max_attributes: int = Field(..., description="Most attributes one shot may ask for")
    source: str = Field(..., description="'default' (the six v1 attributes) or 'file'")
