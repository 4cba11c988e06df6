"""Which session store a server uses: ``create_store(settings)``.

``store.url`` unset: the SQLite file at ``store.path`` (one box, nothing to install). Set to a
``postgresql://`` URL: the PostgreSQL store, shared by every server that names the same database.
The store comes back built but not opened; the app's lifespan opens it (connects and migrates)
and closes it. psycopg is imported only when PostgreSQL is configured, so a box on SQLite needs
no database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import SessionStoreProtocol

if TYPE_CHECKING:
    from ..config import Settings


def create_store(settings: Settings) -> SessionStoreProtocol:
    """The configured session store, not yet opened."""
    store = settings.store
    if store.url is not None:
        from .postgres import PostgresSessionStore

        password = settings.store_password
        return PostgresSessionStore(
            store.url.get_secret_value(),
            password=password.get_secret_value() if password is not None else None,
            pool_max_size=store.pool_max_size,
            timeout_s=store.timeout_s,
        )
    from .sqlite import SessionStore

    return SessionStore(store.path, max_size_mb=store.max_size_mb, reserve_mb=store.reserve_mb)
