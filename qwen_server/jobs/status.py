"""A stored job row (and, while this node runs it, its live counters) as the API's
``JobStatus``; the time helpers the job rows use."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..store.jobs_table import JobRow
from .models import FINISHED, JobSource, JobStatus
from .progress import JobProgress


def now_iso() -> str:
    """Millisecond ISO 8601 UTC (sorts in time order), as the session store writes."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_between(start: str | None, end: str | None) -> float:
    """Seconds from ``start`` to ``end`` (now when None); 0 before a start."""
    if start is None:
        return 0.0
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(timezone.utc)
    return round(max(0.0, (t1 - t0).total_seconds()), 3)


def live_counts(progress: JobProgress) -> dict[str, Any]:
    """The counters of a running pass, as stored in the row's ``progress``."""
    snap = progress.snapshot()
    return {
        "frames_decoded": snap.frames_decoded,
        "frames_total": snap.frames_total,
        "shots_found": snap.shots_found,
        "shots_analysed": snap.shots_analysed,
        "eta_s": snap.eta_s,
    }


def status_of(row: JobRow, progress: JobProgress | None = None) -> JobStatus:
    """``row`` as a JobStatus: the stored counters (the owner saves them about once a second),
    or ``progress``'s live ones when this node runs the job."""
    counts: dict[str, Any] = live_counts(progress) if progress is not None else dict(row.progress)
    if row.state in FINISHED:
        counts["eta_s"] = None if row.state != "done" else 0.0
    return JobStatus(
        job_id=row.job_id,
        state=row.state,
        source=JobSource(kind=row.source_kind, name=row.source_name),
        session_id=row.session_id,
        title=row.title,
        options=row.options,
        frames_decoded=counts.get("frames_decoded", 0),
        frames_total=counts.get("frames_total"),
        shots_found=counts.get("shots_found", 0),
        shots_analysed=counts.get("shots_analysed", 0),
        elapsed_s=seconds_between(row.started_at, row.finished_at),
        eta_s=counts.get("eta_s"),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        node=row.owner,
        cancel_requested=row.cancel_requested,
        purged_at=row.purged_at,
    )
