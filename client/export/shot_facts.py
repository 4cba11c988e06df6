"""What a shot's record says about its sound and its edit, in one place for every output.

The report's tiles and summary and the timeline markers (``formats.shot_metadata``) show the
same facts, so they read them through these functions: speech and music shares, loudness
(LUFS, loudness range), tempo and beats from ``audio_features``; the usable in/out points,
the transition into and out of the shot and its black segments from the record. Older
results (written before these fields existed) give ``None`` / empty values, never invented
ones.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# A shot has dialogue when at least this share of it is speech: the same rule as the server's
# audio class (qwen_server.analysis.audio_cues), so the report and the analysis agree.
DIALOGUE_RATIO = 0.3


def _number(value: Any, places: int = 3) -> float | None:
    """A finite JSON number rounded (bools and anything else: None)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(float(value), places)


def sound_facts(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """``speech``/``music`` (0..1), ``lufs``, ``lra``, ``tempo`` and ``beats`` (the beat times
    in seconds from the shot's start) of a record; None when it has no such field at all."""
    feats = raw.get("audio_features")
    if not isinstance(feats, Mapping):
        return None
    beats = feats.get("beat_times")
    facts = {
        "speech": _number(feats.get("speech_ratio")),
        "music": _number(feats.get("music_ratio")),
        "lufs": _number(feats.get("loudness_lufs"), 1),
        "lra": _number(feats.get("loudness_range_lu"), 1),
        "tempo": _number(feats.get("tempo"), 1),
        "beats": [b for b in (_number(t) for t in beats) if b is not None]
        if isinstance(beats, list)
        else None,
    }
    return facts if any(v is not None for v in facts.values()) else None


def has_dialogue(raw: Mapping[str, Any]) -> bool:
    """Whether the shot's measured speech share reaches ``DIALOGUE_RATIO``."""
    facts = sound_facts(raw)
    return bool(facts and facts["speech"] is not None and facts["speech"] >= DIALOGUE_RATIO)


def _transition(value: Any) -> dict[str, Any] | None:
    """A transition record reduced to kind and frame range (None when absent or malformed)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("kind"), str):
        return None
    return {
        "kind": value["kind"],
        "start_frame": value.get("start_frame"),
        "end_frame": value.get("end_frame"),
    }


def edit_facts(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The usable ``in``/``out`` times, ``transition_in``/``transition_out`` and ``black``
    (count of black segments) of a record; None when it carries none of them."""
    cues = raw.get("technical_cues")
    black = (
        sum(1 for c in cues if isinstance(c, Mapping) and c.get("kind") == "black")
        if isinstance(cues, list)
        else None
    )
    facts = {
        "in": _number(raw.get("in_time"), 6),
        "out": _number(raw.get("out_time"), 6),
        "transition_in": _transition(raw.get("transition_in")),
        "transition_out": _transition(raw.get("transition_out")),
        "black": black,
    }
    return facts if any(v is not None for v in facts.values()) else None


def edit_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over a film: transitions by kind (each counted once, though it is both a shot's
    ``transition_out`` and the next one's ``transition_in``), black segments, and shots with
    dialogue."""
    seen: set[tuple[Any, ...]] = set()
    kinds: Counter[str] = Counter()
    black: list[tuple[int, int]] = []
    dialogue = 0
    for raw in records:
        for key in ("transition_in", "transition_out"):
            t = _transition(raw.get(key))
            if t is not None:
                ident = (t["kind"], t["start_frame"], t["end_frame"])
                if ident not in seen:
                    seen.add(ident)
                    kinds[t["kind"]] += 1
        black += _black_pieces(raw)
        dialogue += has_dialogue(raw)
    return {
        "transitions": dict(sorted(kinds.items())),
        "black_segments": _count_joined(black),
        "dialogue_shots": dialogue,
    }


def _black_pieces(raw: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The (first, last) frames of a record's black cues (each clipped to its shot)."""
    cues = raw.get("technical_cues")
    pieces = []
    for cue in cues if isinstance(cues, list) else []:
        if isinstance(cue, Mapping) and cue.get("kind") == "black":
            first, last = cue.get("start_frame"), cue.get("end_frame")
            if isinstance(first, int) and isinstance(last, int):
                pieces.append((first, last))
    return pieces


def _count_joined(pieces: list[tuple[int, int]]) -> int:
    """How many segments the pieces make once pieces that touch (a black segment split at a
    shot boundary) are joined again."""
    count, end = 0, None
    for first, last in sorted(pieces):
        if end is None or first > end + 1:
            count += 1
        end = last if end is None else max(end, last)
    return count
