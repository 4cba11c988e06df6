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
CSV_AUDIO = ["rms_energy_mean", "spectral_centroid_mean", "zero_crossing_rate_mean", "tempo"]


def _csv_header(attributes: Sequence[str]) -> list[str]:
    """The CSV names of attribute columns: the attribute's name, or ``attribute:NAME`` for a
    name that is also a column of its own (``duration``, ``tempo``...; ':' is never part of an
    attribute name, so the two cannot be confused)."""
    taken = {*CSV_TIMING, "caption", "audio_class", *CSV_AUDIO}
    return [f"attribute:{a}" if a in taken else a for a in attributes]


def shots_csv(
    records: list[dict[str, Any]], analysed: bool, attributes: Sequence[str] | None = None
) -> str:
    """One row per shot: timing, (caption, audio class, one column per attribute, see
    ``attribute_columns``; a shot without a score for it has an empty cell), main audio
    features."""
    names = attribute_columns(records, attributes) if analysed else []
    columns = list(CSV_TIMING)
    if analysed:
        columns += ["caption", "audio_class", *_csv_header(names)]
    columns += CSV_AUDIO
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in records:
        feats = rec.get("audio_features") or {}
        attrs = rec.get("attributes") or {}
        row: list[Any] = [rec.get(c) for c in CSV_TIMING]
        if analysed:
            row += [rec.get("caption"), rec.get("audio_class"), *(attrs.get(a) for a in names)]
        row += [feats.get(c) for c in CSV_AUDIO]
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
