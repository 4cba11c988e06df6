"""Schema versions of the PostgreSQL session database: the same steps as ``migrations.py``.

``PG_MIGRATIONS[i]`` moves a database from version ``i`` to ``i + 1`` and creates what
``migrations.MIGRATIONS[i]`` creates in SQLite (same tables, columns and indexes, in PostgreSQL's
types); a unit test keeps the two lists the same length, so a step added for one backend and not
the other fails CI. The version is the one row of a ``schema_version`` table.

Several servers often start together against one database. Each step therefore runs in its own
transaction that first takes a transaction-level advisory lock (``pg_advisory_xact_lock``), then
reads the version, runs the step and writes the new version: a second server waits on the lock,
then sees the new version and does nothing. An interrupted upgrade resumes where it stopped; a
database newer than this code is refused rather than guessed at.

Type choices: timestamps are ``timestamptz`` (set from the database's clock, so servers with
skewed clocks still agree on order) and read back as the same ISO text the SQLite store returns;
a result is ``json`` (kept verbatim, key order included, unlike ``jsonb``); write orders come from
sequences, since ``MAX(...) + 1`` races between concurrent writers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from ..errors import ConfigError

log = logging.getLogger("qwen_server.store")

# The advisory lock that serialises migrations (any fixed 64-bit number; "qwenstor" in ASCII).
MIGRATION_LOCK = 0x7177656E73746F72


def _v1_sessions(conn: psycopg.Connection) -> None:
    """Version 1: sessions and their shots."""
    conn.execute("CREATE SEQUENCE sessions_write_seq")
    conn.execute(
        """
        CREATE TABLE sessions (
            id          TEXT PRIMARY KEY,
            title       TEXT,
            model       TEXT NOT NULL,
            created_at  TIMESTAMPTZ NOT NULL,
            updated_at  TIMESTAMPTZ NOT NULL,
            shot_count  INTEGER NOT NULL DEFAULT 0,
            -- Write order, newest highest: timestamps can tie.
            write_seq   BIGINT NOT NULL DEFAULT nextval('sessions_write_seq')
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE shots (
            session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            shot_id     BIGINT NOT NULL,
            start_time  DOUBLE PRECISION,
            end_time    DOUBLE PRECISION,
            result_json JSON NOT NULL,
            updated_at  TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (session_id, shot_id)
        )
        """
    )
    conn.execute("CREATE INDEX shots_by_time ON shots (session_id, start_time, shot_id)")
    conn.execute("CREATE INDEX sessions_by_write ON sessions (write_seq DESC)")


def _v2_jobs(conn: psycopg.Connection) -> None:
    """Version 2: film jobs (``jobs_table.create_jobs_table`` in SQLite)."""
    conn.execute("CREATE SEQUENCE jobs_seq")
    conn.execute(
        """
        CREATE TABLE jobs (
            id            TEXT PRIMARY KEY,
            seq           BIGINT NOT NULL DEFAULT nextval('jobs_seq'),
            state         TEXT NOT NULL,
            source_kind   TEXT NOT NULL,   -- upload | path
            source_name   TEXT NOT NULL,   -- the file name shown to callers
            source_path   TEXT NOT NULL,   -- the film on the disk of the box that took it
            session_id    TEXT NOT NULL,
            title         TEXT,
            options_json  JSON NOT NULL,
            progress_json JSON NOT NULL DEFAULT '{}',
            error         TEXT,
            created_at    TIMESTAMPTZ NOT NULL,
            started_at    TIMESTAMPTZ,
            finished_at   TIMESTAMPTZ
        )
        """
    )
    conn.execute("CREATE INDEX jobs_by_seq ON jobs (seq DESC)")


def _v3_job_leases(conn: psycopg.Connection) -> None:
    """Version 3: job owners and leases (``jobs_table.add_job_leases`` in SQLite)."""
    conn.execute(
        "ALTER TABLE jobs ADD COLUMN owner TEXT, ADD COLUMN lease_until TIMESTAMPTZ,"
        " ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,"
        " ADD COLUMN purged_at TIMESTAMPTZ"
    )
    conn.execute("CREATE INDEX jobs_by_state ON jobs (state, seq)")


# Ordered: PG_MIGRATIONS[i] upgrades version i to i + 1. Append only; never edit a released step.
PG_MIGRATIONS: list[Callable[[psycopg.Connection], None]] = [
    _v1_sessions,
    _v2_jobs,
    _v3_job_leases,
]


def pg_schema_version() -> int:
    """The schema version this code writes to PostgreSQL."""
    return len(PG_MIGRATIONS)


def stored_version(conn: psycopg.Connection) -> int:
    """The version recorded in the database (0 for an empty one). Inside a transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING")
    row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return int(row[0]) if row is not None else 0


def migrate_postgres(conn: psycopg.Connection) -> None:
    """Bring the database on ``conn`` (autocommit) to ``pg_schema_version()``, one step per
    transaction under the migration lock. ConfigError when the database is newer."""
    target = pg_schema_version()
    while True:
        with conn.transaction():
            # Held until this transaction ends: concurrent servers migrate one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = stored_version(conn)
            if version > target:
                raise ConfigError(
                    f"store.url: session database schema version {version} is newer than "
                    f"this server supports ({target}); upgrade the server"
                )
            if version == target:
                return
            log.info("migrating session database from version %d to %d", version, version + 1)
            PG_MIGRATIONS[version](conn)
            conn.execute("UPDATE schema_version SET version = %s WHERE id = 1", (version + 1,))
