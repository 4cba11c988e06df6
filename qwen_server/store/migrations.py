"""Schema versions of the session database and the steps between them.

``PRAGMA user_version`` holds the version; ``MIGRATIONS[i]`` moves a database from version ``i``
to ``i + 1``. Each step runs in its own transaction together with the version bump, so an
interrupted upgrade resumes where it stopped. A database newer than this code is refused rather
than guessed at.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..errors import ConfigError
from .jobs_table import add_job_leases, create_jobs_table  # v2 film jobs, v3 leases

log = logging.getLogger("qwen_server.store")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Version 1: sessions and their shots."""
    conn.execute(
        """
        CREATE TABLE sessions (
            id          TEXT PRIMARY KEY,
            title       TEXT,
            model       TEXT NOT NULL,
            created_at  TEXT NOT NULL,   -- ISO 8601 UTC
            updated_at  TEXT NOT NULL,
            shot_count  INTEGER NOT NULL DEFAULT 0,
            -- Write order, newest highest: timestamps can tie within a millisecond.
            write_seq   INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE shots (
            session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            shot_id     INTEGER NOT NULL,
            start_time  REAL,
            end_time    REAL,
            result_json TEXT NOT NULL,
            updated_at  TEXT NOT NULL,
            PRIMARY KEY (session_id, shot_id)
        )
        """
    )
    conn.execute("CREATE INDEX shots_by_time ON shots (session_id, start_time, shot_id)")
    conn.execute("CREATE INDEX sessions_by_write ON sessions (write_seq DESC)")


# Ordered: MIGRATIONS[i] upgrades version i to i + 1. Append only; never edit a released step.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_v1,
    create_jobs_table,
    add_job_leases,
]


def schema_version() -> int:
    """The schema version this code writes."""
    return len(MIGRATIONS)


def migrate(
    conn: sqlite3.Connection, write: Callable[[], AbstractContextManager[sqlite3.Connection]]
) -> None:
    """Bring the database on ``conn`` to ``schema_version()``, one step per ``write()``
    transaction. Raises ConfigError when the database is newer than this code."""
    target = schema_version()
    while True:
        with write():
            # Read inside the write lock: another process may be migrating the same file.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > target:
                raise ConfigError(
                    f"store.path: session database schema version {version} is newer than "
                    f"this server supports ({target}); upgrade the server"
                )
            if version == target:
                return
            log.info("migrating session database from version %d to %d", version, version + 1)
            MIGRATIONS[version](conn)
            # PRAGMA user_version is written in the database header inside this transaction.
            conn.execute(f"PRAGMA user_version={version + 1}")
