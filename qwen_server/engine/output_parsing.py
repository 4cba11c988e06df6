"""Output parsing: one model answer -> caption and scores in [0, 1], never raising.

The answer is the JSON described in ``grammar``; unconstrained or truncated text is read as far as
it goes and the rest falls back to ``FALLBACK_CAPTION`` / ``NEUTRAL_SCORE``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..contract.constants import ATTRIBUTES

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


_CAPTION_RE = re.compile(r'"caption"\s*:\s*"((?:[^"\\]|\\.)*)("?)', re.DOTALL)
_NUMBER = r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"


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


def parse_model_output(text: str, caption_max_chars: int) -> ParsedOutput:
    """Read caption and scores from a model answer. Never raises.

    Valid JSON is read directly; otherwise (truncated or unconstrained text) the caption and each
    score are looked for with regular expressions. Anything missing falls back: the caption to
    ``FALLBACK_CAPTION``, a score to ``NEUTRAL_SCORE``; ``complete`` says whether that happened.
    """
    try:
        return _parse(text if isinstance(text, str) else str(text), caption_max_chars)
    except Exception:  # defensive: a parser bug must not fail a request
        logger.exception("unexpected error parsing model output")
        return ParsedOutput(
            caption=FALLBACK_CAPTION,
            scores=dict.fromkeys(ATTRIBUTES, NEUTRAL_SCORE),
            complete=False,
            missing=["caption", *ATTRIBUTES],
        )


def _parse(text: str, caption_max_chars: int) -> ParsedOutput:
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
        raw_scores = {a: data.get(a) for a in ATTRIBUTES}
    else:
        match = _CAPTION_RE.search(text)
        if match:
            caption = match.group(1).replace('\\"', '"').replace("\\\\", "\\")
        for name in ATTRIBUTES:
            m = re.search(rf'"{name}"\s*:\s*"?{_NUMBER}', text)
            if m:
                raw_scores[name] = m.group(1)

    missing: list[str] = []
    scores: dict[str, float] = {}
    for name in ATTRIBUTES:
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
