"""What flows through the engine: a shot to analyse, its model inputs, raw and parsed answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch

from ..contract.vocabulary import DEFAULT_VOCABULARY, Vocabulary


@dataclass
class ShotInput:
    """One shot to analyse: decoded RGB frames in time order plus what is known about it."""

    shot_id: int
    frames: list[PIL.Image.Image]
    duration: float | None
    audio_summary: str | None
    # What to score: the prompt lists these attributes and the answer carries exactly them.
    vocabulary: Vocabulary = DEFAULT_VOCABULARY


@dataclass
class ModelOutput:
    """The model's reading of one shot: caption and a score in [0, 1] per requested attribute."""

    caption: str
    scores: dict[str, float]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Sizes of the generate call that produced it: batch_size, new_tokens, prompt_tokens.
    counts: dict[str, int] = field(default_factory=dict)
    # What the answer lacked and was filled with a fallback: "caption" and/or attribute names
    # (``ParsedOutput.missing``); empty when the model's answer was complete.
    fallback: list[str] = field(default_factory=list)


@dataclass
class PreparedShot:
    """A shot turned into model inputs (CPU tensors), ready to be collated into a batch."""

    shot_id: int
    input_ids: list[int]
    # (patches, C * temporal_patch * patch * patch) in the model's dtype, pageable memory (a
    # replica copies a batch through its pinned staging buffer: staging.py)
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor  # (n_visuals, 3): one row per image, or one for the clip
    kind: str  # "image" | "video"
    seconds_per_grid: float  # video only: seconds covered by one temporal patch
    # The attribute names the answer must carry, the compiled grammar of exactly that answer
    # (None when generation is unconstrained) and the most tokens the answer may take.
    names: tuple[str, ...] = DEFAULT_VOCABULARY.names
    grammar: Any | None = None
    max_new_tokens: int = 0
    prep_ms: float = 0.0


@dataclass
class RawResult:
    """Decoded text of one generated answer and how many tokens it took."""

    text: str
    new_tokens: int
