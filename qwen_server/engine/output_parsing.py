"""Output parsing: one model answer -> caption and scores in [0, 1], never raising.

The answer is the two-line format described in ``grammar``; unconstrained or truncated text
(JSON included, which unconstrained models like to write) is read as far as it goes and the rest
falls back to ``FALLBACK_CAPTION`` / ``NEUTRAL_SCORE``, each fallback listed in ``missing``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..contract.constants import ATTRIBUTES
from .types import ModelOutput, PreparedShot, RawResult

logger = logging.getLogger("qwen_server.structured")

SCORE_MAX = 100  # scores are generated as integers 0..SCORE_MAX
NEUTRAL_SCORE = 0.5  # what a score falls back to when the text does not carry it
FALLBACK_CAPTION = "(no caption)"


@dataclass
class ParsedOutput:
    """What could be read from one answer; ``complete`` is False when anything fell back."""

    caption: str
    scores: dict[str, float]
    complete: bool
    missing: list[str] = field(default_factory=list)


_JSON_CAPTION_RE = re.compile(r'"caption"\s*:\s*"((?:[^"\\]|\\.)*)("?)', re.DOTALL)
_LINE_CAPTION_RE = re.compile(r"(?:^|\n)\s*caption\s*[:=]\s*([^\n]*)", re.IGNORECASE)
_NUMBER = r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
# ``name=78``, ``name: 78``, ``"name": 78`` or ``"name": "78"``: the first occurrence counts.
_PAIR_RE = re.compile(r'(?<![A-Za-z0-9_])"?([a-z][a-z0-9_]*)"?\s*[=:]\s*"?' + _NUMBER)


def _score_value(raw: Any) -> float | None:
    """Map a raw score to [0, 1]: integers are on the 0..100 scale, decimals <= 1 are fractions.

    Models that ignore the grammar (unconstrained runs) often write 0.7 for 70%: accept both.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            return None
    if not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return None
    value = float(raw) if isinstance(raw, float) and raw <= 1.0 else raw / SCORE_MAX
    return min(1.0, max(0.0, float(value)))


def _clean_caption(text: str, caption_max_chars: int) -> str:
    """One line, trimmed, bounded; never empty."""
    text = " ".join(str(text).split())
    if len(text) > caption_max_chars:
        text = text[: max(1, caption_max_chars - 1)].rstrip() + "…"
        text = text[:caption_max_chars]
    return text or FALLBACK_CAPTION


def parse_model_output(
    text: str, caption_max_chars: int, names: Sequence[str] = ATTRIBUTES
) -> ParsedOutput:
    """Read the caption and the scores of ``names`` from a model answer. Never raises.

    The answer format of ``grammar`` and valid JSON are read directly; otherwise (truncated or
    unconstrained text) the caption and each score are looked for with regular expressions.
    Anything missing falls back: the caption to ``FALLBACK_CAPTION``, a score to
    ``NEUTRAL_SCORE``; ``complete`` says whether that happened. ``scores`` has exactly
    ``names``, in that order.
    """
    try:
        return _parse(text if isinstance(text, str) else str(text), caption_max_chars, names)
    except Exception:  # defensive: a parser bug must not fail a request
        logger.exception("unexpected error parsing model output")
        return ParsedOutput(
            caption=FALLBACK_CAPTION,
            scores=dict.fromkeys(names, NEUTRAL_SCORE),
            complete=False,
            missing=["caption", *names],
        )


def _parse(text: str, caption_max_chars: int, names: Sequence[str]) -> ParsedOutput:
    data: Any = None
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        if end > start:
            try:
                data = json.loads(text[start : end + 1])
            except ValueError:
                data = None
    caption: str | None = None
    raw_scores: dict[str, Any] = {}
    if isinstance(data, dict):
        if isinstance(data.get("caption"), str):
            caption = data["caption"]
        raw_scores = {a: data.get(a) for a in names}
    else:
        line = _LINE_CAPTION_RE.search(text)
        quoted = _JSON_CAPTION_RE.search(text)
        if line and not (quoted and quoted.start() < line.start()):
            caption = line.group(1)
        elif quoted:
            caption = quoted.group(1).replace('\\"', '"').replace("\\\\", "\\")
        # Scores are read after the caption line when there is one: a caption may itself say
        # "intensity=9" and must not count as the score.
        rest = text[line.end() :] if line else text
        wanted = set(names)
        for m in _PAIR_RE.finditer(rest):
            if m.group(1) in wanted and m.group(1) not in raw_scores:
                raw_scores[m.group(1)] = m.group(2)

    missing: list[str] = []
    scores: dict[str, float] = {}
    for name in names:
        value = _score_value(raw_scores.get(name))
        if value is None:
            missing.append(name)
            value = NEUTRAL_SCORE
        scores[name] = value
    if caption is None or not caption.strip():
        missing.insert(0, "caption")
        caption = FALLBACK_CAPTION
    return ParsedOutput(
        caption=_clean_caption(caption, caption_max_chars),
        scores=scores,
        complete=not missing,
        missing=missing,
    )


def read_answer(
    raw: RawResult,
    shot: PreparedShot,
    *,
    caption_max_chars: int,
    queue_ms: float,
    generate_ms: float,
    batch_size: int,
) -> ModelOutput:
    """One generated answer as the engine's output for its shot: parsed against the shot's own
    attribute names, with its timings, the sizes of its generate call and what fell back."""
    parsed = parse_model_output(raw.text, caption_max_chars, shot.names)
    timings = {
        "queue_ms": round(queue_ms, 2),
        "preprocess_ms": round(shot.prep_ms, 2),
        "generate_ms": round(generate_ms, 2),
    }
    counts = {
        "batch_size": batch_size,
        "new_tokens": int(raw.new_tokens),
        "prompt_tokens": len(shot.input_ids),
    }
    return ModelOutput(parsed.caption, parsed.scores, timings, counts, list(parsed.missing))
