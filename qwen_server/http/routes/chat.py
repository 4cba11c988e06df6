"""``POST /chat``: a question about one film, answered from its shot results.

The film is a stored session (``session_id``) or results sent inline (``results``). Without
``stream`` the answer comes back as one JSON object (``ChatResponse``). With ``"stream": true``
the answer is Server-Sent Events (``text/event-stream``), one JSON object per ``data:`` line:

    data: {"delta": "The tension peaks in "}          (any number: answer text, in order)
    data: {"done": true, "model": "...", "session_id": "...", "shots_in_context": 40,
           "shots_total": 40, "cited_shots": [12, 31]}  (last event of a good answer)
    event: error
    data: {"status": 504, "detail": "chat provider did not answer within ..."}

Failures before the first answer text (bad input, unknown session, no key, provider auth, 429,
timeout, an empty or unreadable provider stream) are ordinary HTTP errors: the response starts
only once the provider has sent text. A failure after that can only be reported in the stream,
as one ``event: error`` carrying the status it would have had; it ends the stream, and no
``done`` event follows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...chat.service import ChatService, PreparedChat
from ...chat.streaming import AnswerStream
from ...contract.chat import ChatRequest, ChatResponse
from ...errors import InvalidInput, QwenServerError
from ...store.protocol import SessionStoreProtocol

router = APIRouter(tags=["chat"])

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # Tell nginx-style proxies not to buffer the stream.
    "X-Accel-Buffering": "no",
}


def _sse(data: Mapping[str, Any], event: str | None = None) -> str:
    """One Server-Sent Event; JSON never contains a raw newline, so one data line suffices."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(
    prepared: PreparedChat, stream: AnswerStream, deltas: AsyncIterator[str], first: str
) -> AsyncIterator[str]:
    parts: list[str] = [first]
    yield _sse({"delta": first})
    try:
        async for delta in deltas:
            parts.append(delta)
            yield _sse({"delta": delta})
    except QwenServerError as exc:
        yield _sse({"status": exc.status_code, "detail": exc.message}, event="error")
        return
    finally:
        await stream.aclose()
    answer = "".join(parts)
    yield _sse(
        {
            "done": True,
            "model": stream.model,
            "session_id": prepared.session_id,
            "shots_in_context": prepared.context.shots_in_context,
            "shots_total": prepared.context.shots_total,
            "cited_shots": prepared.cited(answer),
        }
    )


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        200: {
            "description": "The answer (JSON), or with stream=true Server-Sent Events",
            "content": {"text/event-stream": {}},
        },
        401: {"description": "Missing or invalid bearer key"},
        404: {"description": "No such session"},
        422: {"description": "Invalid request, or the session has no shots yet"},
        502: {"description": "The chat provider refused us or sent an unusable reply"},
        503: {"description": "Chat not configured (NEBIUS_API_KEY), or provider rate limit"},
        504: {
            "description": "The chat provider did not finish within chat.timeout_s (the total "
            "time one answer may take; a stream already started ends with an error event)"
        },
    },
)
async def chat(body: ChatRequest, request: Request) -> Any:
    """Answer ``question`` about the film, citing shot ids and timecodes."""
    service: ChatService = request.app.state.chat
    # A missing key is a server state: say so before doing any work.
    service.ensure_configured()

    results: Sequence[Mapping[str, Any]]
    title: str | None = None
    if body.session_id is not None:
        store: SessionStoreProtocol = request.app.state.store
        detail = await run_in_threadpool(store.get_session, body.session_id)
        if not detail.shots:
            raise InvalidInput(f"session {body.session_id} has no shot results yet")
        results, title = detail.shots, detail.title
    else:
        assert body.results is not None  # the request model requires one of the two
        results = [shot.model_dump() for shot in body.results]

    history = [m.model_dump() for m in body.history]
    prepared = await run_in_threadpool(
        lambda: service.prepare(
            results, body.question, history=history, session_id=body.session_id, title=title
        )
    )

    if body.stream:
        stream = await service.open_stream(prepared)
        deltas = aiter(stream)
        try:
            # Wait for the first text before sending headers: until then every failure
            # (including an empty or unreadable provider stream) is still a plain HTTP error.
            first = await anext(deltas)
        except BaseException:
            await stream.aclose()
            raise
        return StreamingResponse(
            _events(prepared, stream, deltas, first),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    answer, model = await service.complete(prepared)
    return ChatResponse(
        answer=answer,
        model=model,
        session_id=body.session_id,
        shots_in_context=prepared.context.shots_in_context,
        shots_total=prepared.context.shots_total,
        cited_shots=await run_in_threadpool(prepared.cited, answer),
    )
