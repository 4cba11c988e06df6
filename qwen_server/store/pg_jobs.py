"""The ``jobs`` table in PostgreSQL: ``JobsTable``'s API (``jobs_table.py``) on the shared store.

Same rows (``JobRow``), same methods, same errors (``StoreError``, 503): the job manager can
keep its jobs in whichever store the sessions are in. Differences are PostgreSQL's types only:
times are ``timestamptz`` (ISO text in and out, as in SQLite), the JSON columns are ``json``, and
``seq`` comes from a sequence (``MAX(seq) + 1`` races when several servers insert at once).
Leases use the database's clock (``now()``), so the nodes' clocks need not agree; a claim takes
its row with ``SELECT ... FOR UPDATE SKIP LOCKED``, so nodes claiming at once take different jobs
and never wait on each other.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from .faults import StoreError
from .jobs_table import ACTIVE_STATES, UPDATABLE, JobRow
from .records import iso_utc

if TYPE_CHECKING:
    from .postgres import PostgresSessionStore

_BASE_COLUMNS = (
    "id, state, source_kind, source_name, source_path, session_id, title, options_json::text,"
    " progress_json::text, error, created_at, started_at, finished_at"
)
_INSERT_COLUMNS = _BASE_COLUMNS.replace("::text", "")
_COLUMNS = _BASE_COLUMNS + ", owner, cancel_requested, purged_at"
_LEASE = "lease_until = now() + make_interval(secs => %s)"
_EXPIRED = "(owner IS NULL OR lease_until IS NULL OR lease_until < now())"


def _time(value: Any) -> str | None:
    return iso_utc(value) if isinstance(value, datetime) else value


def _row(r: Any) -> JobRow:
    return JobRow.from_columns(r, _time)


def _sets(fields: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """``SET`` clauses and their values for ``fields`` (``progress`` as JSON)."""
    sets: list[str] = []
    values: list[Any] = []
    for name, value in fields.items():
        if name == "progress":
            sets.append("progress_json = %s::json")
            values.append(json.dumps(value))
        else:
            sets.append(f"{name} = %s")
            values.append(value)
    return sets, values


class PgJobsTable:
    """Reads and writes of the ``jobs`` table through an open ``PostgresSessionStore``."""

    def __init__(self, store: PostgresSessionStore) -> None:
        self.store = store

    def _failed(self, what: str, exc: psycopg.Error) -> StoreError:
        return StoreError(f"job store: {what} failed ({self.store.reason(exc)})")

    def insert(self, row: JobRow) -> None:
        """Store a new job."""
        marks = ", ".join(["%s"] * 7 + ["%s::json"] * 2 + ["%s"] * 4)
        try:
            with self.store._write() as conn:
                conn.execute(
                    f"INSERT INTO jobs ({_INSERT_COLUMNS}) VALUES ({marks})",
                    row.insert_values(),
                )
        except psycopg.Error as exc:
            raise self._failed("creating a job", exc) from None

    def update(self, job_id: str, *, owner: str | None = None, **fields: Any) -> bool:
        """Set some of a job's columns (``UPDATABLE``; ``progress`` a dict, stored as JSON).
        With ``owner``, only while that node still owns the job. True when a row changed."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not a job column: {sorted(unknown)}")
        sets, values = _sets(fields)
        where, args = "id = %s", [job_id]
        if owner is not None:
            where, args = "id = %s AND owner = %s", [job_id, owner]
        try:
            with self.store._write() as conn:
                cur = conn.execute(
                    f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", [*values, *args]
                )
                return cur.rowcount > 0
        except psycopg.Error as exc:
            raise self._failed("updating a job", exc) from None

    def claim(self, owner: str, lease_s: float) -> JobRow | None:
        """Take the oldest job no live node runs (``JobsTable.claim``): the row is locked with
        ``FOR UPDATE SKIP LOCKED``, so concurrent claimers take different jobs."""
        try:
            with self.store._write() as conn:
                r = conn.execute(
                    f"SELECT id FROM jobs WHERE state = ANY(%s) AND {_EXPIRED}"
                    " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                    (list(ACTIVE_STATES),),
                ).fetchone()
                if r is None:
                    return None
                got = conn.execute(
                    f"UPDATE jobs SET owner = %s, {_LEASE} WHERE id = %s RETURNING {_COLUMNS}",
                    (owner, lease_s, r[0]),
                ).fetchone()
        except psycopg.Error as exc:
            raise self._failed("claiming a job", exc) from None
        return _row(got) if got is not None else None

    def renew(self, job_id: str, owner: str, lease_s: float, **fields: Any) -> bool | None:
        """The owner's heartbeat (``JobsTable.renew``): None when ``owner`` lost the job, else
        whether a cancel was requested."""
        sets, values = _sets(fields)
        try:
            with self.store._write() as conn:
                r = conn.execute(
                    f"UPDATE jobs SET {', '.join([_LEASE, *sets])} WHERE id = %s AND owner = %s"
                    " RETURNING cancel_requested",
                    [lease_s, *values, job_id, owner],
                ).fetchone()
        except psycopg.Error as exc:
            raise self._failed("renewing a job's lease", exc) from None
        return None if r is None else bool(r[0])

    def release(self, job_id: str, owner: str) -> None:
        """Give a job up (a shutdown): any node may claim it at once."""
        try:
            with self.store._write() as conn:
                conn.execute(
                    "UPDATE jobs SET owner = NULL, lease_until = NULL WHERE id = %s AND owner = %s",
                    (job_id, owner),
                )
        except psycopg.Error as exc:
            raise self._failed("releasing a job", exc) from None

    def request_cancel(self, job_id: str, finished_at: str) -> JobRow | None:
        """Cancel a job this node does not run (``JobsTable.request_cancel``)."""
        try:
            with self.store._write() as conn:
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = %s,"
                    f" cancel_requested = TRUE WHERE id = %s AND state = ANY(%s) AND {_EXPIRED}",
                    (finished_at, job_id, list(ACTIVE_STATES)),
                )
                r = conn.execute(
                    "UPDATE jobs SET cancel_requested = TRUE WHERE id = %s AND state = ANY(%s)"
                    f" RETURNING {_COLUMNS}",
                    (job_id, list(ACTIVE_STATES)),
                ).fetchone()
                if r is None:
                    r = conn.execute(
                        f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,)
                    ).fetchone()
        except psycopg.Error as exc:
            raise self._failed("cancelling a job", exc) from None
        return _row(r) if r is not None else None

    def get(self, job_id: str) -> JobRow | None:
        """The job, or None when there is none with that id."""
        try:
            with self.store._read() as conn:
                r = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        except psycopg.Error as exc:
            raise self._failed("reading a job", exc) from None
        return _row(r) if r is not None else None

    def page(self, *, limit: int, offset: int) -> tuple[list[JobRow], int]:
        """One page of jobs, newest first, and the total count."""
        try:
            with self.store._read() as conn:
                count = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT %s OFFSET %s",
                    (limit, offset),
                ).fetchall()
        except psycopg.Error as exc:
            raise self._failed("listing jobs", exc) from None
        return [_row(r) for r in rows], int(count[0]) if count is not None else 0

    def active(self) -> list[JobRow]:
        """Jobs left queued, decoding or analysing (to resume at start-up), oldest first."""
        try:
            with self.store._read() as conn:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE state = ANY(%s) ORDER BY seq",
                    (list(ACTIVE_STATES),),
                ).fetchall()
        except psycopg.Error as exc:
            raise self._failed("listing active jobs", exc) from None
        return [_row(r) for r in rows]
