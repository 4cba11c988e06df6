"""summary.json of a run: the film's length, shot count, its transitions and black cues (from
the shots' transition fields, ``client.media.boundaries``) and, after analysis, each
attribute's mean, max and top shots; and ``attribute_columns``, the attribute names a run's
final files carry (the requested names, else those of the first shot, then any other name a
record holds, so no score is ever lost)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("client.run_summary")

TOP_SHOTS = 5


def attribute_columns(
    records: Sequence[dict[str, Any]], requested: Sequence[str] | None = None
) -> list[str]:
    """The attribute names of a run's final files, in order: the requested names (else the
    names of the first record, i.e. shot 1's), then every other name any record holds, in the
    order first seen. Nothing a server returned is dropped: a server whose vocabulary changed
    during a run without --attributes adds columns (its shots' cells of the old ones stay
    empty; ``finalize`` warns)."""
    names = dict.fromkeys(requested or ())
    for rec in records:
        attrs = rec.get("attributes")
        if isinstance(attrs, dict):
            names.update(dict.fromkeys(attrs))
    return list(names)


def _warn_if_mixed(records: Sequence[dict[str, Any]]) -> None:
    """One warning when the shots were not all scored on the same attributes."""
    kinds = {
        tuple(sorted(r["attributes"])) for r in records if isinstance(r.get("attributes"), dict)
    }
    if len(kinds) > 1:
        log.warning(
            "the shots were not all scored on the same attributes (the server's vocabulary "
            "changed during the run?); %s has a column for each of the %d names",
            "shots.csv",
            len(attribute_columns(records)),
        )


def summarize(
    records: list[dict[str, Any]],
    film: dict[str, Any],
    settings: dict[str, Any],
    analysed: bool,
    attributes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The film summary: length, shot count and, after analysis, each attribute's mean, max and
    top shots (every attribute of ``attribute_columns``, over the shots scored on it), the
    audio classes and the model. Deterministic given the records."""
    frames = (records[-1]["end_frame"] + 1) if records else 0
    duration = records[-1]["end_time"] if records else 0.0
    durations = [r["duration"] for r in records]
    summary: dict[str, Any] = {
        "film": film,
        "duration": duration,
        "frame_count": frames,
        "shot_count": len(records),
        "mean_shot_duration": round(sum(durations) / len(durations), 6) if durations else 0.0,
        "shots_with_audio": sum(1 for r in records if r.get("audio_features")),
        "shots_with_audio_error": sum(1 for r in records if r.get("audio_error")),
        # Speech measured by silero-vad (speech_ratio present) vs not measurable (speech_error).
        "shots_with_speech_measured": sum(
            1 for r in records if (r.get("audio_features") or {}).get("speech_ratio") is not None
        ),
        "shots_with_speech_error": sum(1 for r in records if r.get("speech_error")),
    }
    if analysed:
        per_attribute: dict[str, Any] = {}
        for name in attribute_columns(records, attributes):
            scored = [
                (r["attributes"][name], r["shot_id"], r)
                for r in records
                if name in (r.get("attributes") or {})
            ]
            if not scored:
                continue
            values = [s[0] for s in scored]
            top = sorted(scored, key=lambda s: (-s[0], s[1]))[:TOP_SHOTS]
            per_attribute[name] = {
                "mean": round(sum(values) / len(values), 6),
                "max": round(max(values), 6),
                "top_shots": [
                    {
                        "shot_id": sid,
                        "score": score,
                        "start_timecode": r["start_timecode"],
                        "caption": r.get("caption"),
                    }
                    for score, sid, r in top
                ],
            }
        summary["attributes"] = per_attribute
        classes = Counter(str(r.get("audio_class")) for r in records)
        summary["audio_classes"] = dict(sorted(classes.items()))
        models = sorted({m for r in records if (m := r.get("model"))})
        summary["model"] = models[0] if len(models) == 1 else models
    summary["transitions"] = film_transitions(records)
    summary["technical_cues"] = film_cues(records)
    summary["settings"] = settings
    return summary


def _key(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (rec.get("kind"), rec.get("start_frame"), rec.get("end_frame"))


def film_transitions(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct transitions of the shots' ``transition_in``/``transition_out``, in film
    order, each with ``from_shot``/``to_shot``: the shots before and after it (None at the
    film's start and end, or where the neighbour is not among the records)."""
    ordered = sorted(records, key=lambda r: r["start_frame"])
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for i, rec in enumerate(ordered):
        prev = ordered[i - 1] if i > 0 else None
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        before = prev if prev is not None and prev["end_frame"] + 1 == rec["start_frame"] else None
        after = nxt if nxt is not None and rec["end_frame"] + 1 == nxt["start_frame"] else None
        for field, src, dst in (
            ("transition_in", before, rec),
            ("transition_out", rec, after),
        ):
            mark = rec.get(field)
            if isinstance(mark, dict) and _key(mark) not in found:
                found[_key(mark)] = {
                    **mark,
                    "from_shot": src["shot_id"] if src is not None else None,
                    "to_shot": dst["shot_id"] if dst is not None else None,
                }
    return sorted(found.values(), key=lambda m: (m["start_frame"], m["end_frame"]))


def film_cues(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every black segment of the shots' ``technical_cues``, in film order, the parts of one
    segment that a boundary split between two shots joined again."""
    parts = sorted(
        (c for r in records for c in (r.get("technical_cues") or []) if isinstance(c, dict)),
        key=lambda c: (c["start_frame"], c["end_frame"]),
    )
    cues: list[dict[str, Any]] = []
    for cue in parts:
        last = cues[-1] if cues else None
        if (
            last is not None
            and last["kind"] == cue["kind"]
            and cue["start_frame"] <= (last["end_frame"] + 1)
        ):
            if cue["end_frame"] > last["end_frame"]:
                last["end_frame"], last["end_time"] = cue["end_frame"], cue["end_time"]
            continue
        cues.append(dict(cue))
    return cues
