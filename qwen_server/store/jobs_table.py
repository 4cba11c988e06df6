"""The ``jobs`` table of the session database: server-side film jobs (``qwen_server.jobs``).

Kept apart from ``sqlite.py`` (sessions) so the job SQL lives in one place. A job row holds what
a restarted server needs to resume the job (its state, source file, options) and the last
progress it reported (for ``GET /jobs/{id}`` after a restart). The job's files (upload, results
folder) live on the box's disk under ``jobs.dir``; the row only names them.

Decisions:

* **Schema step 2** (``create_jobs_table``, appended to ``migrations.MIGRATIONS``); **step 3**
  (``add_job_leases``): ``owner`` (the node id of the job manager running it), ``lease_until``
  (unix seconds: the owner's heartbeat renews it; past it any node may take the job over),
  ``cancel_requested`` (set by a node that does not run the job; the owner's heartbeat reads it)
  and ``purged_at`` (the job's files were removed by ``DELETE /jobs/{id}?purge=true``).
* **Claims.** ``claim`` picks the oldest claimable job and takes it inside one ``BEGIN
  IMMEDIATE`` write transaction, so two processes sharing the file never both take one job.
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
import time
from collections.abc import Callable, Sequence
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


def add_job_leases(conn: sqlite3.Connection) -> None:
    """Schema version 3: who runs a job, until when, and what another node asked of it."""
    conn.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN lease_until REAL")  # unix seconds
    conn.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE jobs ADD COLUMN purged_at TEXT")
    conn.execute("CREATE INDEX jobs_by_state ON jobs (state, seq)")


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
    owner: str | None = None  # the node running it (or that ran it last)
    cancel_requested: bool = False
    purged_at: str | None = None

    def insert_values(self) -> tuple[Any, ...]:
        """The values of ``INSERT_COLUMNS``, in order (both backends)."""
        return (
            self.job_id,
            self.state,
            self.source_kind,
            self.source_name,
            self.source_path,
            self.session_id,
            self.title,
            json.dumps(self.options),
            json.dumps(self.progress),
            self.error,
            self.created_at,
            self.started_at,
            self.finished_at,
        )

    @classmethod
    def from_columns(
        cls, r: Sequence[Any], to_iso: Callable[[Any], str | None] = lambda v: v
    ) -> JobRow:
        """A row read back as ``COLUMNS`` (both backends); ``to_iso`` turns the backend's
        timestamps into ISO text (SQLite stores the text itself)."""
        return cls(
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
            created_at=to_iso(r[10]) or "",
            started_at=to_iso(r[11]),
            finished_at=to_iso(r[12]),
            owner=r[13],
            cancel_requested=bool(r[14]),
            purged_at=to_iso(r[15]),
        )


# Columns a job manager may set with ``update`` (``progress`` is stored as JSON).
UPDATABLE = frozenset({"state", "error", "started_at", "finished_at", "progress", "purged_at"})

_INSERT_COLUMNS = (
    "id, state, source_kind, source_name, source_path, session_id, title, options_json,"
    " progress_json, error, created_at, started_at, finished_at"
)
_COLUMNS = _INSERT_COLUMNS + ", owner, cancel_requested, purged_at"


def _row(r: tuple[Any, ...]) -> JobRow:
    return JobRow.from_columns(r)


class JobsTable:
    """Reads and writes of the ``jobs`` table through an open ``SessionStore``."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def insert(self, row: JobRow) -> None:
        """Store a new job."""
        try:
            with self.store._write() as conn:
                conn.execute(
                    f"INSERT INTO jobs ({_INSERT_COLUMNS}, seq) VALUES ({', '.join('?' * 13)},"
                    " (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))",
                    row.insert_values(),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"job store: creating a job failed ({exc})") from None

    def update(self, job_id: str, *, owner: str | None = None, **fields: Any) -> bool:
        """Set some of a job's columns (``UPDATABLE``; ``progress`` a dict, stored as JSON).
        With ``owner``, only while that node still owns the job. True when a row changed."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not a job column: {sorted(unknown)}")
        if "progress" in fields:
            fields["progress_json"] = json.dumps(fields.pop("progress"))
        names = list(fields)
        where, args = "id = ?", [job_id]
        if owner is not None:
            where, args = "id = ? AND owner = ?", [job_id, owner]
        try:
            with self.store._write() as conn:
                cur = conn.execute(
                    f"UPDATE jobs SET {', '.join(f'{n} = ?' for n in names)} WHERE {where}",
                    [*(fields[n] for n in names), *args],
                )
                return cur.rowcount > 0
        except sqlite3.Error as exc:
            raise StoreError(f"job store: updating a job failed ({exc})") from None

    def claim(self, owner: str, lease_s: float) -> JobRow | None:
        """Take the oldest job no live node runs: queued and unowned, or active with its lease
        expired (its node died) or released (a shutdown). None when there is none."""
        now = time.time()
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        try:
            with self.store._write() as conn:
                r = conn.execute(
                    f"SELECT id FROM jobs WHERE state IN ({marks}) AND (owner IS NULL"
                    " OR lease_until IS NULL OR lease_until < ?) ORDER BY seq LIMIT 1",
                    (*ACTIVE_STATES, now),
                ).fetchone()
                if r is None:
                    return None
                conn.execute(
                    "UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ?",
                    (owner, now + lease_s, r[0]),
                )
                got = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (r[0],)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"job store: claiming a job failed ({exc})") from None
        return _row(got)

    def renew(self, job_id: str, owner: str, lease_s: float, **fields: Any) -> bool | None:
        """The owner's heartbeat: extend its lease and set ``fields`` (as ``update``). None when
        ``owner`` no longer owns the job, else whether a cancel was requested."""
        if "progress" in fields:
            fields["progress_json"] = json.dumps(fields.pop("progress"))
        sets = ["lease_until = ?", *(f"{n} = ?" for n in fields)]
        try:
            with self.store._write() as conn:
                cur = conn.execute(
                    f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND owner = ?",
                    [time.time() + lease_s, *fields.values(), job_id, owner],
                )
                if cur.rowcount == 0:
                    return None
                r = conn.execute(
                    "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"job store: renewing a job's lease failed ({exc})") from None
        return bool(r[0])

    def release(self, job_id: str, owner: str) -> None:
        """Give a job up (a shutdown): any node may claim it at once."""
        try:
            with self.store._write() as conn:
                conn.execute(
                    "UPDATE jobs SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                    (job_id, owner),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"job store: releasing a job failed ({exc})") from None

    def request_cancel(self, job_id: str, finished_at: str) -> JobRow | None:
        """Cancel a job this node does not run: a job no live node runs (queued and unowned, or
        its lease expired) is cancelled here and now; a running one gets ``cancel_requested``
        for its owner to act on. The row after, or None for an unknown id."""
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        try:
            with self.store._write() as conn:
                conn.execute(
                    f"UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 1"
                    f" WHERE id = ? AND state IN ({marks})"
                    " AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?)",
                    (finished_at, job_id, *ACTIVE_STATES, time.time()),
                )
                conn.execute(
                    f"UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state IN ({marks})",
                    (job_id, *ACTIVE_STATES),
                )
                r = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"job store: cancelling a job failed ({exc})") from None
        return _row(r) if r is not None else None

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
