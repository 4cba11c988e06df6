"""PostgreSQL store of film sessions, for many servers sharing one store (``store.url``).

Same interface, schema versions and guarantees as the SQLite store (``protocol.py``); only how
they are reached differs.

Decisions:

* **A pool, autocommit connections, explicit transactions.** ``psycopg_pool.ConnectionPool``
  (at most ``store.pool_max_size``) serves the routes' threads; every connection is in
  autocommit mode and every call opens exactly one ``transaction()``, so a batch is stored
  entirely or not at all and no connection goes back to the pool inside a transaction. A
  connection is checked when taken from the pool, so a database restart costs no failed request.
* **No lost or duplicated rows under concurrent writers.** Shots are upserts on their primary
  key ``(session_id, shot_id)``. A batch first upserts its session row, which row-locks it until
  commit: writers to one session queue there, so the recount of ``shot_count`` at the end of
  the batch sees every shot committed before it; writers to different sessions do not wait for
  each other. ``DELETE`` locks the session row first too (the shots go by ``ON DELETE CASCADE``),
  so a delete and a write never lock in opposite orders (no deadlock).
* **Order and time.** ``write_seq`` (a sequence value taken under the row lock at the end of the
  batch) orders ``GET /sessions`` newest first; timestamps come from the database's clock.
* **Consistent reads.** A read is one ``REPEATABLE READ READ ONLY`` transaction: the count and
  the page of ``list_sessions`` (and a session and its shots) come from one snapshot.
* **Waits are bounded.** ``store.timeout_s`` bounds connecting, waiting for a pooled connection
  and waiting for a row lock (``lock_timeout``); past it the call fails with ``StoreError``.
* **Secrets.** The URL is only ever shown masked (``urls.mask_url``). A reason shown to callers or
  on ``/health`` names neither a host nor a socket path nor the password (``pg_reason``).
* **Failures** are ``StoreError`` (503) with the database's reason, tracked by ``WriteFailures``
  exactly as in SQLite. A database that cannot be reached or migrated at start-up is a
  ``ConfigError`` naming ``store.url`` (masked). There is no spare file: disk space is the
  database server's to manage (a full disk there is a ``StoreError`` like any other).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from ..contract.sessions import SessionDetail, SessionSummary
from ..errors import ConfigError, InvalidInput, NotFound
from .faults import StoreError, WriteFailures
from .pg_migrations import migrate_postgres, pg_schema_version
from .records import SUMMARY_COLUMNS, check_session_id, detail, iso_utc, shot_rows, summary
from .urls import MASK, mask_url, url_password

if TYPE_CHECKING:
    from .pg_jobs import PgJobsTable

log = logging.getLogger("qwen_server.store")

# /health must answer fast even when the database is gone: its probe waits at most this long.
HEALTH_TIMEOUT_S = 2.0

_SERVER_AT = re.compile(r'server (?:at "[^"]*", port \d+|on socket "[^"]*")')
_QUOTED_PATH = re.compile(r'"[^"]*/[^"]*"')


def pg_reason(exc: BaseException, *, secret: str | None = None) -> str:
    """A one-line reason for ``exc`` fit for callers and ``/health``: the server's message when
    there is one (with its SQLSTATE), else the driver's; hosts, socket paths and file paths are
    replaced and ``secret`` (the password) masked, should any message ever quote it."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = " ".join(str(primary or exc or type(exc).__name__).split())
    text = _SERVER_AT.sub("the database server", text)
    text = _QUOTED_PATH.sub('"<path>"', text)
    if secret:
        text = text.replace(secret, MASK)
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


def _times(row: Any) -> tuple[Any, ...]:
    """A summary row with its ``timestamptz`` columns as the store's ISO text."""
    return tuple(iso_utc(v) if isinstance(v, datetime) else v for v in row)


_UPSERT_SESSION = """
    INSERT INTO sessions (id, title, model, created_at, updated_at)
    VALUES (%s, %s, %s, now(), now())
    ON CONFLICT (id) DO UPDATE SET
        title = COALESCE(EXCLUDED.title, sessions.title),
        model = EXCLUDED.model
"""
_UPSERT_SHOT = """
    INSERT INTO shots (session_id, shot_id, start_time, end_time, result_json, updated_at)
    VALUES (%s, %s, %s, %s, %s::json, now())
    ON CONFLICT (session_id, shot_id) DO UPDATE SET
        start_time = EXCLUDED.start_time,
        end_time = EXCLUDED.end_time,
        result_json = EXCLUDED.result_json,
        updated_at = EXCLUDED.updated_at
"""
# Under the row lock the upsert took: recount (replaced shots must not count twice), and take the
# write order and the update time now, so both follow the order in which writers hold the lock.
_FINISH_SESSION = """
    UPDATE sessions SET
        shot_count = (SELECT COUNT(*) FROM shots WHERE session_id = %s),
        write_seq = nextval('sessions_write_seq'),
        updated_at = clock_timestamp()
    WHERE id = %s
"""


class PostgresSessionStore:
    """Thread-safe PostgreSQL store of sessions and their shot results (a connection pool)."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        pool_max_size: int = 8,
        timeout_s: float = 30.0,
    ) -> None:
        """``url``: a libpq URL (its password, if any, came from the environment);
        ``password`` overrides it (``QWEN_STORE_PASSWORD``); libpq also reads PGPASSWORD and
        ~/.pgpass. ``timeout_s`` bounds connecting, waiting for a connection and row locks."""
        self.url = url
        self.masked_url = mask_url(url)
        self.pool_max_size = pool_max_size
        self.timeout_s = timeout_s
        self._password = password
        self._secret = password or url_password(url)
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._failures = WriteFailures()

    # --- lifecycle ------------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": "qwen-server",
            # libpq counts whole seconds and treats 1 as 2.
            "connect_timeout": max(2, round(self.timeout_s)),
        }
        if self._password is not None:
            kwargs["password"] = self._password
        return kwargs

    def _configure(self, conn: psycopg.Connection) -> None:
        """Every new pooled connection: row-lock waits bounded like SQLite's busy timeout."""
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false)", (f"{int(self.timeout_s * 1000)}ms",)
        )

    def open(self) -> None:
        """Connect, migrate to the current schema (under the migration lock), open the pool.
        Idempotent; ConfigError naming ``store.url`` (masked) when that fails."""
        with self._lock:
            if self._pool is not None:
                return
            try:
                # A direct connection first: its error says why (refused, auth), where a pool
                # would only time out.
                with psycopg.connect(self.url, **self._connect_kwargs()) as conn:
                    migrate_postgres(conn)
                pool = ConnectionPool(
                    self.url,
                    kwargs=self._connect_kwargs(),
                    min_size=1,
                    max_size=self.pool_max_size,
                    timeout=self.timeout_s,
                    configure=self._configure,
                    check=ConnectionPool.check_connection,
                    name="qwen-store",
                    open=False,
                )
                try:
                    pool.open(wait=True, timeout=self.timeout_s)
                except BaseException:
                    pool.close()
                    raise
            except psycopg.Error as exc:
                # Start-up only, for the operator: the masked URL says which database.
                raise ConfigError(
                    f"store.url: cannot open the session database {self.masked_url} "
                    f"({pg_reason(exc, secret=self._secret)})"
                ) from None
            self._pool = pool
        log.info(
            "session store open: PostgreSQL %s (schema version %d, pool of at most %d)",
            self.masked_url,
            pg_schema_version(),
            self.pool_max_size,
        )

    def close(self) -> None:
        """Close the pool and its connections. The store can be opened again."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def describe(self) -> str:
        """``PostgreSQL <url with the password masked>``."""
        return f"PostgreSQL {self.masked_url}"

    def jobs_table(self) -> PgJobsTable:
        """The ``jobs`` table of this database (``pg_jobs.PgJobsTable``)."""
        from .pg_jobs import PgJobsTable

        return PgJobsTable(self)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        return self._read_problem() is None

    def _read_problem(self) -> str | None:
        pool = self._pool
        if pool is None:
            return "not open"
        try:
            with pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                conn.execute("SELECT 1 FROM sessions LIMIT 1").fetchall()
            return None
        except psycopg.Error as exc:
            reason = pg_reason(exc, secret=self._secret)
            log.warning("session store ping failed: %s", reason)
            return reason

    def health(self) -> str:
        """``"ok"``, or ``"error: <reason>"`` when the database cannot be read or its last write
        failed and no write has succeeded since. For ``/health``."""
        problem = self._read_problem()
        if problem is not None:
            return f"error: {problem}"
        write_error = self._failures.error
        return f"error: last write failed ({write_error})" if write_error else "ok"

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        """One read-committed write transaction on a pooled connection."""
        with self._pooled() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        """One read-only transaction: one consistent snapshot for several SELECTs."""
        with self._pooled() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("session store is not open")
        with pool.connection() as conn:
            yield conn

    def reason(self, exc: BaseException) -> str:
        """``pg_reason`` with this store's password masked (for the jobs table too)."""
        return pg_reason(exc, secret=self._secret)

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
            with self._write() as conn:
                conn.execute(_UPSERT_SESSION, (session_id, title, model))
                with conn.cursor() as cur:
                    cur.executemany(_UPSERT_SHOT, rows)
                conn.execute(_FINISH_SESSION, (session_id, session_id))
        except psycopg.Error as exc:
            what = f"storing {len(rows)} results"
            raise self._failures.failed(what, exc, reason=self.reason(exc)) from None
        self._failures.ok()
        log.debug("stored %d results in session %s", len(rows), session_id)

    def list_sessions(self, *, limit: int, offset: int) -> tuple[list[SessionSummary], int]:
        """One page of sessions, most recently written first, and the total count."""
        if limit < 0 or offset < 0:
            raise InvalidInput("limit and offset must not be negative")
        try:
            with self._read() as conn:
                count = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()
                rows = conn.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM sessions ORDER BY write_seq DESC"
                    " LIMIT %s OFFSET %s",
                    (limit, offset),
                ).fetchall()
        except psycopg.Error as exc:
            reason = self.reason(exc)
            raise StoreError(f"session store: listing sessions failed ({reason})") from None
        total = int(count[0]) if count is not None else 0
        return [summary(_times(r)) for r in rows], total

    def get_session(self, session_id: str) -> SessionDetail:
        """A session with its shots in time order; shots without a start time come last."""
        check_session_id(session_id)
        try:
            with self._read() as conn:
                row = conn.execute(
                    f"SELECT {SUMMARY_COLUMNS} FROM sessions WHERE id = %s", (session_id,)
                ).fetchone()
                blobs = conn.execute(
                    "SELECT result_json::text FROM shots WHERE session_id = %s"
                    " ORDER BY start_time IS NULL, start_time, shot_id",
                    (session_id,),
                ).fetchall()
        except psycopg.Error as exc:
            reason = self.reason(exc)
            raise StoreError(f"session store: reading session failed ({reason})") from None
        if row is None:
            raise NotFound(f"session not found: {session_id}")
        return detail(_times(row), [b[0] for b in blobs])

    def delete_session(self, session_id: str) -> None:
        """Delete a session and all its shots; NotFound when there is no such session."""
        check_session_id(session_id)
        try:
            with self._write() as conn:
                deleted = conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,)).rowcount
        except psycopg.Error as exc:
            raise self._failures.failed(
                "deleting a session", exc, reason=self.reason(exc)
            ) from None
        self._failures.ok()
        if not deleted:
            raise NotFound(f"session not found: {session_id}")
        log.info("deleted session %s", session_id)
