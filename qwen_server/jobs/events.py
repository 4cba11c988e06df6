"""``GET /jobs/{id}/events``: a job's status as Server-Sent Events.

``event: status`` with the JobStatus JSON on every change and at least once a second (a
heartbeat that also carries the elapsed time), ``id:`` counting from 1; the stream ends with
``event: end`` and the final status once the job is done, failed or cancelled (at once for a
job already finished). It also ends when the server starts draining, so an open stream never
holds up a shutdown; the client then reconnects to another server or later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from .models import FINISHED, JobStatus

POLL_S = 0.25
# Below 1 s: with the poll interval on top, no two events are more than a second apart.
HEARTBEAT_S = 0.75


def sse(event: str, data: str, counter: int) -> bytes:
    """One SSE message (``data`` is one line of JSON)."""
    return f"id: {counter}\nevent: {event}\ndata: {data}\n\n".encode()


async def job_events(
    read: Callable[[], Awaitable[JobStatus]], draining: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """The event stream of one job; ``read`` returns its status now."""
    counter = 0
    last: str | None = None
    last_sent = 0.0
    while True:
        status = await read()
        changed = status.model_dump(exclude={"elapsed_s", "eta_s"})
        key = repr(changed)
        now = time.monotonic()
        if status.state in FINISHED:
            counter += 1
            yield sse("end", status.model_dump_json(), counter)
            return
        if key != last or now - last_sent >= HEARTBEAT_S:
            counter += 1
            yield sse("status", status.model_dump_json(), counter)
            last, last_sent = key, now
        if draining():
            return
        await asyncio.sleep(POLL_S)
