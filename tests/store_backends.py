"""The two session store backends, seen the same way by the store tests.

A ``StoreBackend`` makes stores on one database (a SQLite file, or a PostgreSQL database of its
own on the test server) and answers the few questions a test asks the database directly: the
schema version, the tables, a row count. The ``store_backend`` fixture (conftest) gives each
parametrized test one of each, so every store test runs against both.
"""

from __future__ import annotations

import sqlite3
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.postgres_server import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[1]


class StoreBackend:
    """What a store test needs from a backend; see the two subclasses."""

    name: str
    config_key: str  # the setting a ConfigError at open names
    migrations_attr: tuple[Any, str]  # (module, list name) of its schema steps

    def make_store(self) -> Any:
        """A new, unopened store on this backend's database."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """``test_settings`` overrides that point a server at this database."""
        raise NotImplementedError

    def subprocess_env(self) -> dict[str, str]:
        """Environment a child process needs to reach the database."""
        return {}

    def store_code(self) -> str:
        """Python lines that build and open the store as ``s`` in a child process."""
        raise NotImplementedError

    def begin_code(self) -> str:
        """Python lines that leave ``conn`` inside an open write transaction of ``s``."""
        raise NotImplementedError

    def version(self) -> int:
        raise NotImplementedError

    def set_version(self, version: int) -> None:
        """Mark the (empty) database as being at ``version``."""
        raise NotImplementedError

    def tables(self) -> set[str]:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def count(self, table: str) -> int:
        raise NotImplementedError


@dataclass
class SqliteBackend(StoreBackend):
    path: Path
    name = "sqlite"
    config_key = "store.path"

    @property
    def migrations_attr(self) -> tuple[Any, str]:  # type: ignore[override]
        from qwen_server.store import migrations

        return migrations, "MIGRATIONS"

    def make_store(self) -> Any:
        from qwen_server.store.sqlite import SessionStore

        return SessionStore(self.path)

    def settings(self) -> dict[str, Any]:
        return {"store": {"path": str(self.path)}}

    def store_code(self) -> str:
        return textwrap.dedent(
            f"""
            from qwen_server.store.sqlite import SessionStore
            s = SessionStore(Path({str(self.path)!r}))
            s.open()
            """
        )

    def begin_code(self) -> str:
        return 'conn = s._conn()\nconn.execute("BEGIN IMMEDIATE")\n'

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def version(self) -> int:
        return int(self._query("PRAGMA user_version")[0][0])

    def set_version(self, version: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._query(f"PRAGMA user_version = {version}")

    def tables(self) -> set[str]:
        return {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self._query(f"PRAGMA table_info({table})")}

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])


@dataclass
class PostgresBackend(StoreBackend):
    server: PostgresServer
    url: str
    name = "postgres"
    config_key = "store.url"

    @property
    def migrations_attr(self) -> tuple[Any, str]:  # type: ignore[override]
        from qwen_server.store import pg_migrations

        return pg_migrations, "PG_MIGRATIONS"

    def make_store(self, **kw: Any) -> Any:
        from qwen_server.store.postgres import PostgresSessionStore

        return PostgresSessionStore(self.url, password=self.server.password, **kw)

    def settings(self) -> dict[str, Any]:
        return {"store": {"url": self.url}, "store_password": self.server.password}

    def subprocess_env(self) -> dict[str, str]:
        # libpq's own variable: the child passes no password, so this path is tested too.
        return {"PGPASSWORD": self.server.password}

    def store_code(self) -> str:
        return textwrap.dedent(
            f"""
            from qwen_server.store.postgres import PostgresSessionStore
            s = PostgresSessionStore({self.url!r})
            s.open()
            """
        )

    def begin_code(self) -> str:
        return 'conn = s._pool.getconn()\nconn.execute("BEGIN")\n'

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, password=self.server.password, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def version(self) -> int:
        return int(self._query("SELECT version FROM schema_version")[0][0])

    def set_version(self, version: int) -> None:
        import psycopg

        with psycopg.connect(self.url, password=self.server.password, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1),"
                " version INTEGER NOT NULL)"
            )
            conn.execute("INSERT INTO schema_version VALUES (1, %s)", (version,))

    def tables(self) -> set[str]:
        rows = self._query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}

    def columns(self, table: str) -> set[str]:
        rows = self._query(
            f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
        )
        return {r[0] for r in rows}

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])
