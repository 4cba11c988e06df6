"""How the session store meets faults: its error type, failure tracking, and disk space.

``StoreError`` is what callers see (503 with the database's reason), whichever the backend.
``WriteFailures`` remembers the last failed write for ``/health`` and logs a run of failures once,
not once per request.

``SpareFile`` lets ``DELETE`` work on a full disk. On a full disk SQLite cannot even delete: in
WAL mode a delete appends the changed pages to the write-ahead log first, and that append needs
free space. So the store keeps a *spare file*
(``<database>.reserve``, ``store.reserve_mb`` of real, allocated blocks) beside the database.
When a delete fails because the disk is full, the spare is given up, which frees exactly that
much space, and the delete is retried; the spare is re-created once a later write succeeds and
the disk has room again. Writes of new results never use the spare: they fail cleanly (the
caller still gets its results, with ``stored: false``), and deleting old sessions is how an
operator makes room.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import QwenServerError

log = logging.getLogger("qwen_server.store")

# After a failed attempt to (re)create the spare, wait this long before the next attempt, so a
# full disk is not hit with an N-megabyte write on every request.
RETRY_AFTER_S = 60.0
_CHUNK = 1 << 20


class StoreError(QwenServerError):
    """The session database cannot be read or written (disk full, I/O error, locked too long).

    A server state, not the caller's fault: 503. The message carries the database's reason
    (e.g. SQLite's "database or disk is full"), never the database path, host or password.
    """

    status_code = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "30"})


class WriteFailures:
    """The reason the last write failed, until a write succeeds again. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: str | None = None

    @property
    def error(self) -> str | None:
        """Why the last write failed; None when the last write succeeded."""
        with self._lock:
            return self._error

    def failed(self, what: str, exc: BaseException, *, reason: str | None = None) -> StoreError:
        """Record a failed write and return the error to raise. A warning is logged for the
        first failure of a run (or when the reason changes); repeats go to debug. ``reason``
        replaces ``str(exc)`` when the backend has cleaned it (PostgreSQL: no hosts or paths)."""
        reason = reason or str(exc) or type(exc).__name__
        with self._lock:
            first, self._error = self._error != reason, reason
        if first:
            log.warning(
                "session store: %s failed (%s); repeats are not logged until it recovers",
                what,
                reason,
            )
        else:
            log.debug("session store: %s failed (%s)", what, reason)
        return StoreError(f"session store: {what} failed ({reason})")

    def ok(self) -> None:
        """Record a successful write; logs the recovery once."""
        with self._lock:
            recovered, self._error = self._error, None
        if recovered:
            log.info("session store: writes succeed again (last failure: %s)", recovered)


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` says the disk (or ``store.max_size_mb``) is full."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class SpareFile:
    """A file of ``size_mb`` allocated bytes that can be released to free that much disk."""

    def __init__(self, path: Path, size_mb: float) -> None:
        self.path = path
        self.size = int(size_mb * 1_048_576)
        self._retry_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def present(self) -> bool:
        """True when the spare exists at its full size."""
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def ensure(self) -> bool:
        """Create the spare if it is missing (at most one attempt per ``RETRY_AFTER_S`` after a
        failure). Returns whether it is now present. Never raises."""
        if not self.enabled or self.present():
            return self.enabled
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            self._allocate()
        except OSError as exc:
            self._retry_at = now + RETRY_AFTER_S
            self._remove()
            log.warning(
                "session store: cannot reserve %d MB of spare disk space (%s); deleting sessions "
                "on a full disk may fail until there is room",
                self.size // 1_048_576,
                exc.strerror or exc,
            )
            return False
        log.info("session store: %d MB of spare disk space reserved", self.size // 1_048_576)
        return True

    def release(self) -> bool:
        """Delete the spare to free its space; True when there was one to delete."""
        if not self.path.exists():
            return False
        self._remove()
        # Let the next successful write re-create it at once.
        self._retry_at = 0.0
        log.warning(
            "session store: disk full; released %d MB of spare space to complete a delete",
            self.size // 1_048_576,
        )
        return True

    def _allocate(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                # Real blocks, not a sparse file: only allocated space can be given back.
                os.posix_fallocate(fd, 0, self.size)
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and is_disk_full(exc):
                    raise
                written, block = 0, b"\0" * _CHUNK
                while written < self.size:
                    written += os.write(fd, block[: min(_CHUNK, self.size - written)])
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, self.path)

    def _remove(self) -> None:
        for path in (self.path, self.path.with_name(self.path.name + ".tmp")):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # pragma: no cover - nothing more can be done
                log.debug("cannot remove %s", path.name, exc_info=True)
