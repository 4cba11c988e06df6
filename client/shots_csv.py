"""shots.csv: one row per shot with its timing, (after analysis) caption, audio class and one
column per attribute, and the main audio features."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from client.run_summary import attribute_columns

CSV_TIMING = [
    "shot_id",
    "start_frame",
    "end_frame",
    "frame_count",
    "start_time",
    "end_time",
    "duration",
    "start_timecode",
    "end_timecode",
    "start_smpte",
    "end_smpte",
]
# The shot's usable range (transition and black frames excluded) and how it begins and ends.
CSV_EDIT = ["in_time", "out_time", "in_smpte", "out_smpte", "transition_in", "transition_out"]
CSV_AUDIO = ["rms_energy_mean", "spectral_centroid_mean", "zero_crossing_rate_mean", "tempo"]
# Speech, music and loudness (older results without them give empty cells); ``beats`` is the
# number of beat times in the shot.
CSV_SOUND = ["speech_ratio", "music_ratio", "loudness_lufs", "loudness_range_lu", "beats"]


def _transition_kind(value: Any) -> str | None:
    """The kind of a ``transition_in``/``transition_out`` record (None when there is none)."""
    return value.get("kind") if isinstance(value, dict) else None


def _sound_cells(feats: dict[str, Any]) -> list[Any]:
    """The CSV_SOUND cells of one shot's audio features."""
    beats = feats.get("beat_times")
    return [
        feats.get("speech_ratio"),
        feats.get("music_ratio"),
        feats.get("loudness_lufs"),
        feats.get("loudness_range_lu"),
        len(beats) if isinstance(beats, list) else None,
    ]


def _csv_header(attributes: Sequence[str]) -> list[str]:
    """The CSV names of attribute columns: the attribute's name, or ``attribute:NAME`` for a
    name that is also a column of its own (``duration``, ``tempo``...; ':' is never part of an
    attribute name, so the two cannot be confused)."""
    taken = {*CSV_TIMING, *CSV_EDIT, "caption", "audio_class", *CSV_AUDIO, *CSV_SOUND}
    return [f"attribute:{a}" if a in taken else a for a in attributes]


def shots_csv(
    records: list[dict[str, Any]], analysed: bool, attributes: Sequence[str] | None = None
) -> str:
    """One row per shot: timing, in/out points and transition kinds, (caption, audio class, one
    column per attribute, see ``attribute_columns``; a shot without a score for it has an empty
    cell), main audio features, speech/music/loudness and the beat count."""
    names = attribute_columns(records, attributes) if analysed else []
    columns = [*CSV_TIMING, *CSV_EDIT]
    if analysed:
        columns += ["caption", "audio_class", *_csv_header(names)]
    columns += [*CSV_AUDIO, *CSV_SOUND]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        feats = rec.get("audio_features") or {}
        attrs = rec.get("attributes") or {}
        row: list[Any] = [rec.get(c) for c in CSV_TIMING]
        row += [rec.get(c) for c in CSV_EDIT[:4]]
        row += [
            _transition_kind(rec.get("transition_in")),
            _transition_kind(rec.get("transition_out")),
        ]
        if analysed:
            row += [rec.get("caption"), rec.get("audio_class"), *(attrs.get(a) for a in names)]
        row += [feats.get(c) for c in CSV_AUDIO]
        row += _sound_cells(feats)
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
