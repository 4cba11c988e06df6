"""The one interface of the session store, whichever database is behind it.

The routes (``/analyze_batch``, ``/sessions``, ``/chat``) and ``/health`` see only this protocol;
``factory.open_store`` picks the backend from ``store.url`` (SQLite file by default, PostgreSQL
for many boxes sharing one store). Both backends give the same guarantees:

* a batch is stored in one transaction (all its shots or none), a shot stored again under the same
  ``(session_id, shot_id)`` replaces the old one (upsert), so concurrent writers to one session
  lose and duplicate nothing;
* a database failure is a ``StoreError`` (503 with the database's reason, never a path or a
  password); the first failure of a run of them is logged once, and ``health()`` says
  ``error: ...`` until a write succeeds again;
* a bad session id or an unstorable result is ``InvalidInput`` (422), an unknown session
  ``NotFound`` (404), a database that cannot be opened or is newer than the code ``ConfigError``
  at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..contract.sessions import SessionDetail, SessionSummary

if TYPE_CHECKING:
    from .jobs_table import JobRow


class JobsTableProtocol(Protocol):
    """The ``jobs`` table of a store (``jobs_table.JobsTable``, ``pg_jobs.PgJobsTable``)."""

    def insert(self, row: JobRow) -> None: ...

    def update(self, job_id: str, *, owner: str | None = None, **fields: Any) -> bool: ...

    def claim(self, owner: str, lease_s: float) -> JobRow | None: ...

    def renew(self, job_id: str, owner: str, lease_s: float, **fields: Any) -> bool | None: ...

    def release(self, job_id: str, owner: str) -> None: ...

    def request_cancel(self, job_id: str, finished_at: str) -> JobRow | None: ...

    def get(self, job_id: str) -> JobRow | None: ...

    def page(self, *, limit: int, offset: int) -> tuple[list[JobRow], int]: ...

    def active(self) -> list[JobRow]: ...


@runtime_checkable
class SessionStoreProtocol(Protocol):
    """What the app needs from a session store. Every method is safe to call from any thread."""

    def open(self) -> None:
        """Connect, create and migrate the schema; idempotent. ConfigError when unusable."""
        ...

    def close(self) -> None:
        """Release every connection; the store can be opened again."""
        ...

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        ...

    def health(self) -> str:
        """``"ok"`` or ``"error: <reason>"`` (unreadable, or the last write failed)."""
        ...

    def describe(self) -> str:
        """Which database this is, for logs and operators: never a password."""
        ...

    def save_results(
        self, session_id: str, results: list[dict[str, Any]], *, title: str | None, model: str
    ) -> None:
        """Store a batch of shot results under ``session_id`` in one transaction."""
        ...

    def list_sessions(self, *, limit: int, offset: int) -> tuple[list[SessionSummary], int]:
        """One page of sessions, most recently written first, and the total count."""
        ...

    def get_session(self, session_id: str) -> SessionDetail:
        """A session with its shots in time order (start_time, then shot_id; untimed last)."""
        ...

    def delete_session(self, session_id: str) -> None:
        """Delete a session and its shots; NotFound when there is none."""
        ...

    def jobs_table(self) -> JobsTableProtocol:
        """The ``jobs`` table in this store's database (film jobs), for the job manager."""
        ...
