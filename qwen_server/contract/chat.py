"""Request and response models of ``/chat`` (questions over a film's results).

The shapes are documented in the README; sessions are in ``sessions``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    field_validator,
    model_validator,
)

from .analysis import Seconds, ShotId, duplicate_ids
from .constants import (
    MAX_CAPTION_CHARS,
    MAX_HISTORY_MESSAGE_CHARS,
    MAX_HISTORY_MESSAGES,
    MAX_INLINE_SHOTS,
    MAX_QUESTION_CHARS,
    MAX_TIME_S,
)
from .sessions import SessionId

# Inline chat results are caller input: strict like the analysis contract (``true`` is not 1.0,
# ``"0.5"`` not 0.5), while a JSON integer score (0 or 1) stays valid.
Score = Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class ChatAttributes(BaseModel):
    """The six scores of a shot. Missing scores are allowed for partial local results."""

    model_config = ConfigDict(extra="ignore")

    suspense: Score | None = Field(None, description="0..1")
    darkness: Score | None = Field(None, description="0..1")
    ambiguity: Score | None = Field(None, description="0..1")
    emotional_tension: Score | None = Field(None, description="0..1")
    intensity: Score | None = Field(None, description="0..1")
    motion: Score | None = Field(None, description="0..1")


class ChatShot(BaseModel):
    """One shot result given inline to ``/chat``: a ``ShotResult`` or a client ``shots.jsonl`` line.

    ``start``/``end`` are accepted as spellings of ``start_time``/``end_time`` so local result files
    can be sent as they are; unknown fields are ignored.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    shot_id: ShotId = Field(..., description="Shot number, unique in the film")
    caption: str = Field("", max_length=MAX_CAPTION_CHARS, description="What is on screen")
    attributes: ChatAttributes = Field(default_factory=ChatAttributes, description="The six scores")
    audio_class: str | None = Field(None, max_length=64, description="silence, speech, music, ...")
    start_time: Seconds | None = Field(
        None,
        validation_alias=AliasChoices("start_time", "start"),
        description=f"Seconds from the film's start, at most {MAX_TIME_S:.0f} (or 'start')",
    )
    end_time: Seconds | None = Field(
        None,
        validation_alias=AliasChoices("end_time", "end"),
        description=f"Seconds from the film's start, at most {MAX_TIME_S:.0f} (or 'end')",
    )


class ChatMessage(BaseModel):
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"] = Field(..., description="Who said it")
    content: str = Field(
        ..., min_length=1, max_length=MAX_HISTORY_MESSAGE_CHARS, description="What was said"
    )


class ChatRequest(BaseModel):
    """A question about one film, given as a stored session or as inline results."""

    # "Exactly one of session_id / results" (checked by _one_source) stated in the OpenAPI too.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["session_id"],
                    "properties": {"session_id": {"type": "string"}, "results": {"type": "null"}},
                },
                {
                    "required": ["results"],
                    "properties": {"results": {"type": "array"}, "session_id": {"type": "null"}},
                },
            ]
        }
    )

    session_id: SessionId | None = Field(None, description="A stored session (or give results)")
    results: list[ChatShot] | None = Field(
        None,
        min_length=1,
        max_length=MAX_INLINE_SHOTS,
        description="Shot results inline, instead of session_id",
    )
    question: str = Field(
        ..., min_length=1, max_length=MAX_QUESTION_CHARS, description="The question (not blank)"
    )
    history: list[ChatMessage] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_MESSAGES,
        description="Earlier turns, oldest first; the oldest are dropped if over budget",
    )
    stream: StrictBool = Field(False, description="Answer as Server-Sent Events (see README)")

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("question must not be blank")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ChatRequest:
        if (self.session_id is None) == (self.results is None):
            raise ValueError("give exactly one of session_id or results")
        if self.results is not None:
            dups = duplicate_ids(s.shot_id for s in self.results)
            if dups:
                raise ValueError(f"duplicate shot_id values in results: {dups[:10]}")
        return self


class ChatResponse(BaseModel):
    """A non-streamed answer."""

    answer: str = Field(..., description="The model's answer, citing shot ids and timecodes")
    model: str = Field(..., description="Chat model that answered")
    session_id: str | None = Field(None, description="The session asked about, if any")
    shots_in_context: int = Field(..., description="Shot rows sent to the model")
    shots_total: int = Field(..., description="Shots the film has")
    cited_shots: list[int] = Field(
        ..., description="Shot ids the answer cites (by id or timecode), in order of first mention"
    )
