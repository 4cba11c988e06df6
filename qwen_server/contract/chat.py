"""Request and response models of ``/chat`` (questions over a film's results).

The shapes are documented in the README; sessions are in ``sessions``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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
from .numbers import Ratio
from .sessions import SessionId
from .vocabulary import (
    ATTRIBUTE_NAME_PATTERN,
    ATTRIBUTE_NAME_RE,
    ATTRIBUTE_NAME_RULE,
    MAX_ATTRIBUTES,
)

# Inline chat results are caller input: strict like the analysis contract (``true`` is not 1.0,
# ``"0.5"`` not 0.5), while a JSON integer score (0 or 1) stays valid.
Score = Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def _attribute_name(name: str) -> str:
    if not ATTRIBUTE_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid attribute name {name[:60]!r} ({ATTRIBUTE_NAME_RULE})")
    return name


ChatAttributeName = Annotated[str, Strict(), AfterValidator(_attribute_name)]


class ChatAttributes(BaseModel):
    """A shot's scores: any attribute names (``ATTRIBUTE_NAME_RULE``), at most MAX_ATTRIBUTES,
    each a number in [0, 1] or null (not scored, as partial local results have).

    The vocabulary is the caller's (issue 10): the v1 six, the 38 of a trailer pipeline, or a
    mix across the film's shots. Every key is validated, so a bad name or score is a 422 whose
    ``loc`` ends with that attribute (``results.0.attributes.humor``). The scores are read as
    attributes too (``attrs.suspense``), like the six-field model this replaces.
    """

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "propertyNames": {"pattern": ATTRIBUTE_NAME_PATTERN},
            "maxProperties": MAX_ATTRIBUTES,
        },
    )
    # The type of every key and value (pydantic validates extras against it).
    __pydantic_extra__: dict[ChatAttributeName, Score | None] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MAX_ATTRIBUTES:
            raise ValueError(f"{len(data)} attributes in one shot (at most {MAX_ATTRIBUTES})")
        return data

    def scores(self) -> dict[str, float | None]:
        """The scores as a plain dict, in the order sent."""
        return dict(self.__pydantic_extra__ or {})


class ChatAudio(BaseModel):
    """The part of a result's ``audio`` cues the chat's shot table shows (issue 15)."""

    model_config = ConfigDict(extra="ignore")

    speech_ratio: Ratio | None = Field(None, description="Share of the shot with speech, 0..1")


class ChatShot(BaseModel):
    """One shot result given inline to ``/chat``: a ``ShotResult`` or a client ``shots.jsonl`` line.

    ``start``/``end`` are accepted as spellings of ``start_time``/``end_time`` so local result files
    can be sent as they are; unknown fields are ignored.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    shot_id: ShotId = Field(..., description="Shot number, unique in the film")
    caption: str = Field("", max_length=MAX_CAPTION_CHARS, description="What is on screen")
    attributes: ChatAttributes = Field(
        default_factory=ChatAttributes,
        description=(
            f"Attribute name -> score in [0, 1] (or null), any names, at most {MAX_ATTRIBUTES}"
        ),
    )
    audio_class: str | None = Field(None, max_length=64, description="silence, speech, music, ...")
    audio: ChatAudio | None = Field(
        None, description="The result's audio cues; the table shows their speech_ratio"
    )
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
