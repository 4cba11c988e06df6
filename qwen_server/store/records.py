"""What both store backends share: session id rules, stored rows of a batch, timestamps.

A batch is validated and turned into rows here, before any database is touched, so SQLite and
PostgreSQL refuse exactly the same input with exactly the same message, and a bad batch never
opens a transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..contract.constants import SESSION_ID_RE, SESSION_ID_RULE
from ..contract.sessions import SessionDetail, SessionSummary
from ..errors import InvalidInput


def check_session_id(session_id: str) -> None:
    """Raise InvalidInput (422) unless ``session_id`` is a safe, bounded id."""
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise InvalidInput(f"invalid session_id: must be {SESSION_ID_RULE}")


def attribute_union(shots: list[dict[str, Any]]) -> list[str]:
    """Attribute names of ``shots`` in order of first appearance (sessions may mix sets)."""
    names: dict[str, None] = {}
    for shot in shots:
        attrs = shot.get("attributes")
        if isinstance(attrs, dict):
            names.update(dict.fromkeys(str(k) for k in attrs))
    return list(names)


def now_iso() -> str:
    """Now as millisecond ISO 8601 in UTC with a ``Z``: sorts lexicographically in time order."""
    return iso_utc(datetime.now(timezone.utc))


def iso_utc(moment: datetime) -> str:
    """``moment`` (timezone-aware) in the stored text form, e.g. ``2026-12-01T21:30:00.123Z``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def optional_float(value: Any) -> float | None:
    """``value`` as a float, or None when absent or not a number."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ShotRow:
    """One shot result as stored: ordering columns plus the whole result as JSON text."""

    shot_id: int
    start_time: float | None
    end_time: float | None
    result_json: str


def shot_rows(session_id: str, results: list[dict[str, Any]]) -> list[ShotRow]:
    """Validate ``session_id`` and every result of a batch; InvalidInput names the first bad one.

    The whole result JSON is kept (new result fields need no migration); NaN and infinities
    are refused, because JSON cannot hold them and a reader would choke later.
    """
    check_session_id(session_id)
    rows: list[ShotRow] = []
    for result in results:
        shot_id = result.get("shot_id") if isinstance(result, dict) else None
        if not isinstance(shot_id, int) or isinstance(shot_id, bool):
            raise InvalidInput("each stored result needs an integer shot_id")
        try:
            blob = json.dumps(result, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"shot {shot_id}: result is not storable JSON ({exc})") from None
        rows.append(
            ShotRow(
                shot_id=shot_id,
                start_time=optional_float(result.get("start_time")),
                end_time=optional_float(result.get("end_time")),
                result_json=blob,
            )
        )
    return rows


# Columns of a session summary, in the order ``summary`` reads them (both backends).
SUMMARY_COLUMNS = "id, title, model, shot_count, created_at, updated_at"


def summary(row: Any) -> SessionSummary:
    """A ``SessionSummary`` from a row of ``SUMMARY_COLUMNS``."""
    return SessionSummary(
        session_id=row[0],
        title=row[1],
        model=row[2],
        shot_count=row[3],
        created_at=row[4],
        updated_at=row[5],
    )


def detail(row: Any, blobs: list[str]) -> SessionDetail:
    """A ``SessionDetail`` from a summary row and its shots' JSON texts, already in order."""
    shots = [json.loads(b) for b in blobs]
    return SessionDetail(
        **summary(row).model_dump(), shots=shots, attributes=attribute_union(shots)
    )
