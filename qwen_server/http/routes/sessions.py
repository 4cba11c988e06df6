"""``/sessions``: the films stored by ``/analyze_batch`` with a ``session_id``.

``GET /sessions`` pages through them (most recently updated first), ``GET /sessions/{id}``
returns one with its shots in time order, ``DELETE /sessions/{id}`` removes it and answers
204 No Content. Bad ids are 422 with a message stating the rule, unknown ids 404, a store that
cannot be read or written 503 with the database's reason (never a generic 500). ``DELETE`` works
on a full disk: the SQLite store gives up its spare file to make room for the delete. Auth is
the app's middleware; nothing here bypasses it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ...contract.constants import SESSION_ID_PATTERN, SESSION_ID_RULE
from ...contract.sessions import SessionDetail, SessionList
from ...store.faults import StoreError
from ...store.protocol import SessionStoreProtocol
from ...store.records import check_session_id

router = APIRouter(prefix="/sessions", tags=["sessions"])

# Largest offset accepted: far beyond any real store, and well inside both databases' integers.
MAX_OFFSET = 1_000_000_000

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer key"},
    404: {"description": "No such session"},
    422: {"description": "Invalid session id or paging parameters"},
    503: {"description": "The session store cannot be read or written (reason in detail)"},
}


def _store(request: Request) -> SessionStoreProtocol:
    return request.app.state.store


def _session_id_param(
    session_id: str = Path(
        ...,
        description=f"Film id: {SESSION_ID_RULE}",
        # Documented in OpenAPI but checked by check_session_id, whose 422 message states the
        # rule in words instead of a regex.
        json_schema_extra={"pattern": SESSION_ID_PATTERN},
    ),
) -> str:
    check_session_id(session_id)
    return session_id


ValidSessionId = Annotated[str, Depends(_session_id_param)]


@router.get(
    "",
    response_model=SessionList,
    responses={code: _ERRORS[code] for code in (401, 422, 503)},
)
async def list_sessions(
    request: Request,
    limit: int = Query(50, ge=1, le=200, description="Page size"),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="Sessions to skip"),
) -> SessionList:
    """One page of stored sessions, most recently updated first, with the total count."""
    items, total = await run_in_threadpool(
        _store(request).list_sessions, limit=limit, offset=offset
    )
    return SessionList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{session_id}", response_model=SessionDetail, responses=_ERRORS)
async def get_session(request: Request, session_id: ValidSessionId) -> SessionDetail:
    """A session's summary and its shot results in time order (start_time, then shot_id)."""
    return await run_in_threadpool(_store(request).get_session, session_id)


@router.delete("/{session_id}", status_code=204, response_class=Response, responses=_ERRORS)
async def delete_session(request: Request, session_id: ValidSessionId) -> Response:
    """Delete a session and all its shots. 204 No Content on success."""
    try:
        await run_in_threadpool(_store(request).delete_session, session_id)
    except StoreError:
        request.app.state.metrics.observe_store_failure("delete")
        raise
    return Response(status_code=204)
