"""SQLite store of film sessions: the shot results of ``/analyze_batch`` kept under a session id.

Decisions:

* **One connection per thread.** The app calls the store from a thread pool; each thread gets its
  own connection (created on first use, all closed by ``close``). Readers then run in parallel
  under WAL, and writers are serialised by SQLite itself (``BEGIN IMMEDIATE`` + ``busy_timeout``),
  which also keeps several server processes sharing one file correct.
* **Durability.** WAL with ``synchronous=FULL``: a commit is on disk when ``save_results``
  returns, so neither a crash nor a power cut loses a batch the caller was told is stored.
  Batches are few and large, so the extra fsync costs nothing noticeable.
* **Schema versions.** ``PRAGMA user_version`` holds the version; the steps are in
  ``migrations.py`` (each in its own transaction with the version bump; a newer database is
  refused).
* **What is stored.** The whole result JSON per shot (so new result fields need no migration),
  plus ``shot_id``/``start_time``/``end_time`` as columns for ordering.
* **Failures are visible and lose nothing.** A database error is a ``StoreError`` (503 with the
  SQLite reason, never a path) instead of a generic 500, and ``/analyze_batch`` still returns the
  results it computed (``stored: false``). The first failure of a run of them is logged once as
  a warning, the recovery once as info; ``health()`` says ``error: ...`` meanwhile.
* **Full disks.** ``store.max_size_mb`` caps the database (``PRAGMA max_page_count``: writes past
  it fail as on a full disk); a spare file (``store_space``) lets deletes free space on a disk
  that is really full; ``secure_delete=FAST`` keeps a delete from rewriting every freed page.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.sessions import SessionDetail, SessionSummary
from ..errors import ConfigError, InvalidInput, NotFound
from .faults import SpareFile, StoreError, WriteFailures, is_disk_full
from .migrations import migrate, schema_version
from .records import SUMMARY_COLUMNS, check_session_id, detail, now_iso, shot_rows, summary

if TYPE_CHECKING:
    from .jobs_table import JobsTable

log = logging.getLogger("qwen_server.store")

BUSY_TIMEOUT_MS = 30_000

__all__ = ["SessionStore", "StoreError", "check_session_id"]


class SessionStore:
    """Thread-safe SQLite store of sessions and their shot results."""

    def __init__(
        self, path: Path, *, max_size_mb: float | None = None, reserve_mb: float = 0.0
    ) -> None:
        """``max_size_mb`` caps the database file (None: the disk is the limit); ``reserve_mb``
        is the spare file kept so deletes work on a full disk (0: none)."""
        self.path = Path(path)
        self.max_size_mb = max_size_mb
        self._spare = SpareFile(self.path.with_name(self.path.name + ".reserve"), reserve_mb)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._open = False
        self._failures = WriteFailures()

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the parent folder and the file if needed, enable WAL, migrate to the current
        schema. Idempotent; raises ConfigError when the file is unusable or newer than this code.
        """
        with self._lock:
            if self._open:
                return
            self._open = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            # WAL is a property of the file; setting it once is enough, but it is harmless again.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite journal mode is %s, not WAL; concurrent reads will block", mode)
            migrate(conn, self._write)
            self._spare.ensure()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            # ConfigError is raised at start-up only (never to an HTTP caller): the operator
            # needs the path here.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"store.path: cannot open the session database {self.path} ({reason})"
            ) from None
        except ConfigError:
            self.close()
            raise
        log.info("session store open (schema version %d)", schema_version())

    def close(self) -> None:
        """Close every connection this store opened. The store can be opened again."""
        with self._lock:
            conns, self._connections = self._connections, []
            self._open = False
            self._local = threading.local()
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing never matters at shutdown
                log.debug("error closing a store connection", exc_info=True)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        return self._read_problem() is None

    def describe(self) -> str:
        """``SQLite <path>``: for the start-up log (``/health`` never shows it)."""
        return f"SQLite {self.path}"

    def jobs_table(self) -> JobsTable:
        """The ``jobs`` table of this database (``jobs_table.JobsTable``)."""
        from .jobs_table import JobsTable

        return JobsTable(self)

    def _read_problem(self) -> str | None:
        if not self._open:
            return "not open"
        try:
            self._conn().execute("SELECT 1 FROM sessions LIMIT 1").fetchall()
            return None
        except sqlite3.Error as exc:
            log.warning("session store ping failed: %s", exc)
            return str(exc)

    def health(self) -> str:
        """``"ok"``, or ``"error: <reason>"`` when the database cannot be read or its last write
        failed (e.g. disk full) and no write has succeeded since. For ``/health``."""
        problem = self._read_problem()
        if problem is not None:
            return f"error: {problem}"
        write_error = self._failures.error
        return f"error: last write failed ({write_error})" if write_error else "ok"

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, created on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if not self._open:
            raise RuntimeError("session store is not open")
        # isolation_level=None: no implicit transactions; every write below says BEGIN itself.
        # check_same_thread=False only so close() can close it from the shutdown thread; each
        # connection is otherwise used by the one thread that created it.
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted content is zeroed where that costs no extra writes, not page by page: on a
        # nearly full disk a delete must need as little space as possible.
        conn.execute("PRAGMA secure_delete=FAST")
        if self.max_size_mb is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max(1, int(self.max_size_mb * 1_048_576) // page_size)
            conn.execute(f"PRAGMA max_page_count={pages}")
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front, so two writers never
        both read then both write (no lost updates, no deadlock upgrade)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")  # can fail too (disk full): roll back below, never leave open
        except BaseException:
            # SQLite may already have rolled back (e.g. disk full); that is not a second error.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.debug("rollback after a failed write failed", exc_info=True)
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several SELECTs."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # --- API ------------------------------------------------------------------------------

    def save_results(
        self, session_id: str, results: list[dict[str, Any]], *, title: str | None, model: str
    ) -> None:
        """Store a batch of shot results under ``session_id``, creating the session if needed.

        One transaction for the session row and all its shots: a batch is stored entirely or not
        at all. A shot already stored (same ``shot_id``) is replaced by the new result. ``title``
        None keeps the stored title; ``model`` becomes the session's model.
        """
        rows = [
            (session_id, r.shot_id, r.start_time, r.end_time, r.result_json)
            for r in shot_rows(session_id, results)
        ]
        try:
            self._save_rows(session_id, rows, title=title, model=model)
        except sqlite3.Error as exc:
            raise self._failures.failed(f"storing {len(rows)} results", exc) from None
        self._failures.ok()
        self._spare.ensure()
        log.debug("stored %d results in session %s", len(rows), session_id)

    def _save_rows(
        self, session_id: str, rows: list[tuple[Any, ...]], *, title: str | None, model: str
    ) -> None:
        now = now_iso()
        with self._write() as conn:
            conn.execute(
                """
                INSERT INTO sessions (id, title, model, created_at, updated_at, write_seq)
                VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(write_seq), 0) + 1 FROM sessions))
                ON CONFLICT (id) DO UPDATE SET
                    title = COALESCE(excluded.title, sessions.title),
                    model = excluded.model,
                    updated_at = excluded.updated_at,
                    write_seq = excluded.write_seq
                """,
                (session_id, title, model, now, now),
            )
            conn.executemany(
                """
                INSERT INTO shots
                    (session_id, shot_id, start_time, end_time, result_json, updated_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (session_id, shot_id) DO UPDATE SET
                    start_time = excluded.start_time,
                    end_time = excluded.end_time,
                    result_json = excluded.result_json,
                    updated_at = excluded.updated_at
                """,
                [row + (now,) for row in rows],
            )
            # Recount rather than add: replaced shots must not count twice.
            conn.execute(
                "UPDATE sessions SET shot_count = (SELECT COUNT(*) FROM shots WHERE session_id = ?)"
                " WHERE id = ?",
                (session_id, session_id),
            )

    def list_sessions(self, *, limit: int, offset: int) -> tuple[list[SessionSummary], int]:
        """One page of sessions, most recently updated first, and the total count."""
        if limit < 0 or offset < 0:
            raise InvalidInput("limit and offset must not be negative")
        try:
            with self._read() as conn:
                total = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
                rows = conn.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM sessions ORDER BY write_seq DESC"
                    " LIMIT ? OFFSET ?",
                    (limit, offset),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"session store: listing sessions failed ({exc})") from None
        return [summary(r) for r in rows], total

    def get_session(self, session_id: str) -> SessionDetail:
        """A session with its shots in time order; shots without a start time come last."""
        check_session_id(session_id)
        try:
            with self._read() as conn:
                row = conn.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
                ).fetchone()
                blobs = conn.execute(
                    "SELECT result_json FROM shots WHERE session_id = ?"
                    " ORDER BY start_time IS NULL, start_time, shot_id",
                    (session_id,),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"session store: reading session failed ({exc})") from None
        if row is None:
            raise NotFound(f"session not found: {session_id}")
        return detail(row, [b[0] for b in blobs])

    def delete_session(self, session_id: str) -> None:
        """Delete a session and all its shots; NotFound when there is no such session."""
        check_session_id(session_id)
        try:
            try:
                deleted = self._delete_rows(session_id)
            except sqlite3.Error as exc:
                # A full disk cannot even take the delete's log pages: give up the spare file
                # for them and try once more. The space comes back to the store's free pages.
                if not (is_disk_full(exc) and self._spare.release()):
                    raise
                deleted = self._delete_rows(session_id)
                self._checkpoint()
        except sqlite3.Error as exc:
            raise self._failures.failed("deleting a session", exc) from None
        self._failures.ok()
        if not deleted:
            raise NotFound(f"session not found: {session_id}")
        log.info("deleted session %s", session_id)

    def _delete_rows(self, session_id: str) -> int:
        with self._write() as conn:
            conn.execute("DELETE FROM shots WHERE session_id = ?", (session_id,))
            return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the database and truncate it, returning its space to
        the disk (best effort: it needs room for pages the database file lacks)."""
        try:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("session store: checkpoint after a delete failed (%s)", exc)
