"""The ``jobs`` table of the session database: server-side film jobs (``qwen_server.jobs``).

Kept apart from ``sqlite.py`` (sessions) so the job SQL lives in one place. A job row holds what
a restarted server needs to resume the job (its state, source file, options) and the last
progress it reported (for ``GET /jobs/{id}`` after a restart). The job's files (upload, results
folder) live on the box's disk under ``jobs.dir``; the row only names them.

Decisions:

* **Schema step 2** (``create_jobs_table``, appended to ``migrations.MIGRATIONS``).
* **Order.** ``seq`` (an increasing integer) orders ``GET /jobs`` newest first: creation times
  can tie within a millisecond.
* **JSON columns.** ``options_json`` and ``progress_json`` hold the pydantic models' JSON, so a
  new progress field needs no migration.
* **Access.** ``JobsTable`` uses the ``SessionStore``'s per-thread connection and its
  ``_write``/``_read`` transactions (one database, one connection discipline); database errors
  become ``StoreError`` (503) like the session store's.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .faults import StoreError

if TYPE_CHECKING:
    from .sqlite import SessionStore

ACTIVE_STATES = ("queued", "decoding", "analysing")


def create_jobs_table(conn: sqlite3.Connection) -> None:
    """Schema version 2: film jobs."""
    conn.execute(
        """
        CREATE TABLE jobs (
            id            TEXT PRIMARY KEY,
            seq           INTEGER NOT NULL,
            state         TEXT NOT NULL,
            source_kind   TEXT NOT NULL,   -- upload | path
            source_name   TEXT NOT NULL,   -- the file name shown to callers
            source_path   TEXT NOT NULL,   -- the film on this box's disk (never shown)
            session_id    TEXT NOT NULL,
            title         TEXT,
            options_json  TEXT NOT NULL,
            progress_json TEXT NOT NULL DEFAULT '{}',
            error         TEXT,
            created_at    TEXT NOT NULL,   -- ISO 8601 UTC
            started_at    TEXT,
            finished_at   TEXT
        )
        """
    )
    conn.execute("CREATE INDEX jobs_by_seq ON jobs (seq DESC)")


@dataclass
class JobRow:
    """One stored job, as read back."""

    job_id: str
    state: str
    source_kind: str
    source_name: str
    source_path: str
    session_id: str
    title: str | None
    options: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


_COLUMNS = (
    "id, state, source_kind, source_name, source_path, session_id, title, options_json,"
    " progress_json, error, created_at, started_at, finished_at"
)


def _row(r: tuple[Any, ...]) -> JobRow:
    return JobRow(
        job_id=r[0],
        state=r[1],
        source_kind=r[2],
        source_name=r[3],
        source_path=r[4],
        session_id=r[5],
        title=r[6],
        options=json.loads(r[7]),
        progress=json.loads(r[8] or "{}"),
        error=r[9],
        created_at=r[10],
        started_at=r[11],
        finished_at=r[12],
    )


class JobsTable:
    """Reads and writes of the ``jobs`` table through an open ``SessionStore``."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def insert(self, row: JobRow) -> None:
        """Store a new job."""
        try:
            with self.store._write() as conn:
                conn.execute(
                    f"INSERT INTO jobs ({_COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))",
                    (
                        row.job_id,
                        row.state,
                        row.source_kind,
                        row.source_name,
                        row.source_path,
                        row.session_id,
                        row.title,
                        json.dumps(row.options),
                        json.dumps(row.progress),
                        row.error,
                        row.created_at,
                        row.started_at,
                        row.finished_at,
                    ),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"job store: creating a job failed ({exc})") from None

    def update(self, job_id: str, **fields: Any) -> None:
        """Set some of a job's columns: ``state``, ``error``, ``started_at``, ``finished_at``
        or ``progress`` (a dict, stored as JSON)."""
        allowed = {"state", "error", "started_at", "finished_at", "progress"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not a job column: {sorted(unknown)}")
        if "progress" in fields:
            fields["progress_json"] = json.dumps(fields.pop("progress"))
        names = list(fields)
        try:
            with self.store._write() as conn:
                conn.execute(
                    f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
                    [*(fields[n] for n in names), job_id],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"job store: updating a job failed ({exc})") from None

    def get(self, job_id: str) -> JobRow | None:
        """The job, or None when there is none with that id."""
        try:
            with self.store._read() as conn:
                r = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"job store: reading a job failed ({exc})") from None
        return _row(r) if r is not None else None

    def page(self, *, limit: int, offset: int) -> tuple[list[JobRow], int]:
        """One page of jobs, newest first, and the total count."""
        try:
            with self.store._read() as conn:
                total = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?",
                    (limit, offset),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"job store: listing jobs failed ({exc})") from None
        return [_row(r) for r in rows], total

    def active(self) -> list[JobRow]:
        """Jobs left queued, decoding or analysing (to resume at start-up), oldest first."""
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        try:
            with self.store._read() as conn:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY seq",
                    ACTIVE_STATES,
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"job store: listing active jobs failed ({exc})") from None
        return [_row(r) for r in rows]
