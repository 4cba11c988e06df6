"""The audio part of the contract: per-shot features the client sends, cues the server derives.

``AudioFeatures`` are computed by the client (librosa; since issue 15 also silero-vad speech,
beat times and BS.1770 loudness). Every field is optional so that older clients keep working,
and unknown fields are ignored so that newer clients can talk to this server. What the server
makes of them (``AudioCues``) is derived by the rules of ``qwen_server.analysis.audio_cues``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from .constants import LUFS_RANGE, MAX_BEAT_TIMES, MAX_LOUDNESS_RANGE_LU, MAX_SPEECH_SEGMENTS
from .numbers import FiniteFloat, NonNegFinite, Ratio, Score, Seconds

Lufs = Annotated[float, Strict(), Field(ge=LUFS_RANGE[0], le=LUFS_RANGE[1], allow_inf_nan=False)]
LoudnessRange = Annotated[
    float, Strict(), Field(ge=0, le=MAX_LOUDNESS_RANGE_LU, allow_inf_nan=False)
]


class SpeechSegment(BaseModel):
    """One stretch of speech, in seconds from the shot's start (``start`` < ``end``)."""

    model_config = ConfigDict(extra="ignore")

    start: Seconds = Field(..., description="Seconds from the shot's start where speech begins")
    end: Seconds = Field(..., description="Seconds from the shot's start where speech ends")

    @model_validator(mode="after")
    def _start_before_end(self) -> SpeechSegment:
        if not self.start < self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class AudioFeatures(BaseModel):
    """Per-shot audio features computed by the client. Every field is optional."""

    model_config = ConfigDict(extra="ignore")

    mfcc_mean: list[FiniteFloat] | None = Field(
        None, min_length=13, max_length=13, description="13 MFCC means"
    )
    mfcc_std: list[FiniteFloat] | None = Field(
        None, min_length=13, max_length=13, description="13 MFCC standard deviations"
    )
    spectral_centroid_mean: NonNegFinite | None = Field(None, description="Hz")
    spectral_rolloff_mean: NonNegFinite | None = Field(None, description="Hz (85% energy)")
    spectral_bandwidth_mean: NonNegFinite | None = Field(None, description="Hz")
    zero_crossing_rate_mean: Ratio | None = Field(
        None, description="Fraction of sign changes per sample, 0..1"
    )
    rms_energy_mean: NonNegFinite | None = Field(
        None, description="Mean RMS of the mono signal (full scale = 1)"
    )
    rms_energy_std: NonNegFinite | None = Field(None, description="RMS standard deviation")
    chroma_mean: list[NonNegFinite] | None = Field(
        None, min_length=12, max_length=12, description="12 chroma bin means"
    )
    tempo: NonNegFinite | None = Field(
        None, description="Beats per minute; 0 or absent when not meaningful"
    )
    speech_ratio: Ratio | None = Field(
        None, description="Share of the shot's audio with speech (silero-vad), 0..1"
    )
    speech_segments: list[SpeechSegment] | None = Field(
        None,
        max_length=MAX_SPEECH_SEGMENTS,
        description=(
            "Speech as {start, end} seconds from the shot's start: sorted, non-overlapping, "
            f"start < end, at most {MAX_SPEECH_SEGMENTS}"
        ),
    )
    music_ratio: Ratio | None = Field(
        None, description="Share of the shot's duration judged music (sounding, not speech), 0..1"
    )
    beat_times: list[Seconds] | None = Field(
        None,
        max_length=MAX_BEAT_TIMES,
        description=(
            f"Beat times in seconds from the shot's start, non-decreasing, at most {MAX_BEAT_TIMES}"
        ),
    )
    loudness_lufs: Lufs | None = Field(
        None,
        description=(
            f"Integrated loudness, ITU-R BS.1770-4, LUFS in [{LUFS_RANGE[0]:g}, {LUFS_RANGE[1]:g}]"
            "; absent when the window is under one 0.4 s block or gated silent"
        ),
    )
    loudness_range_lu: LoudnessRange | None = Field(
        None,
        description=(
            f"Loudness range (EBU Tech 3342), LU in [0, {MAX_LOUDNESS_RANGE_LU:g}]; "
            "absent for shots under 3 s"
        ),
    )

    @field_validator("speech_segments")
    @classmethod
    def _segments_in_order(cls, value: list[SpeechSegment] | None) -> list[SpeechSegment] | None:
        segments = value or []
        for i in range(1, len(segments)):
            prev, seg = segments[i - 1], segments[i]
            if seg.start < prev.end:
                raise ValueError(
                    f"segments must be sorted and non-overlapping: [{i}] starts at {seg.start} s, "
                    f"before [{i - 1}] ends ({prev.end} s)"
                )
        return value

    @field_validator("beat_times")
    @classmethod
    def _beats_in_order(cls, value: list[float] | None) -> list[float] | None:
        beats = value or []
        for i in range(1, len(beats)):
            if beats[i] < beats[i - 1]:
                raise ValueError(
                    f"beat times must be non-decreasing: [{i}] = {beats[i]} s comes after "
                    f"[{i - 1}] = {beats[i - 1]} s"
                )
        return value


class AudioCues(BaseModel):
    """What the audio features say, derived by the documented rules of ``audio_cues``.

    The last five fields echo the issue-15 evidence the cues used; all null for older clients.
    """

    audio_class: str = Field(
        ..., description="silence | speech | music | ambience | loud_action | unknown"
    )
    loudness: Score = Field(
        ...,
        description=(
            "Loudness on [0, 1] (-60 -> 0, 0 -> 1): from loudness_lufs when sent, else from "
            "RMS energy in dBFS"
        ),
    )
    brightness: Score = Field(..., description="Spectral centroid mapped to [0, 1]")
    noisiness: Score = Field(..., description="Zero-crossing rate mapped to [0, 1]")
    summary: str = Field(..., description="Plain-language summary given to the model")
    speech_ratio: float | None = Field(None, description="Echo of the shot's speech_ratio")
    music_ratio: float | None = Field(None, description="Echo of the shot's music_ratio")
    loudness_lufs: float | None = Field(None, description="Echo of the shot's loudness_lufs")
    loudness_range_lu: float | None = Field(
        None, description="Echo of the shot's loudness_range_lu"
    )
    beat_density: float | None = Field(
        None,
        description=(
            "Beats per second of the shot (beat_times within the duration / duration); null "
            "without beat_times or a duration"
        ),
    )
