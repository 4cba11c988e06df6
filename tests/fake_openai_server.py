"""A small OpenAI-compatible chat server for tests, run on loopback in a background thread.

The chat code under test uses the real ``openai`` client; pointing its ``base_url`` here lets the
tests exercise the real request building, SSE decoding and error classes without the cloud.

Usage::

    with FakeOpenAI(answer="Shot 3 at 00:00:04.000 is the darkest.") as fake:
        settings.chat.base_url = fake.base_url          # http://127.0.0.1:PORT/v1
        ...
        fake.mode = "429"                               # fail on demand
        body = fake.requests[-1]["body"]                # what the client sent

Modes (``fake.mode``):
    ``ok``             answer normally (JSON, or SSE chunks ending with ``data: [DONE]``)
    ``401`` / ``403``  OpenAI-style error body, echoing the presented key as real providers do
                       (in the body and in the ``x-request-id`` header)
    ``429``            rate limited, with ``Retry-After: fake.retry_after``
    ``500`` / ``502`` / ``503``  that server error
    ``slow``           wait ``fake.delay_s`` before answering (beyond the client's timeout)
    ``hang``           accept the request and never answer (no status line, no bytes) until stop
    ``trickle``        send the reply one byte every ``fake.trickle_interval_s`` (each read is
                       quick, the whole reply takes minutes); streamed: the role chunk and the
                       first text chunk at once, then the rest trickled
    ``oversized``      an answer of ``fake.oversized_chars`` characters (streamed: 64 KiB chunks)
    ``stall_stream``   stream a first chunk, then wait ``fake.delay_s`` (stream only)
    ``cut_stream``     stream a first chunk, then drop the connection (stream only)
    ``error_event``    stream a first chunk, then an ``{"error": ...}`` event (stream only)
    ``malformed``      a 200 whose body is not JSON
    ``no_choices``     a 200 with ``"choices": []``
    ``empty_content``  a 200 whose message content is empty
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

DEFAULT_ANSWER = "The tension peaks in shot 2 at 00:00:05.000, the darkest moment of the film."


class FakeOpenAI:
    """OpenAI-compatible ``POST /v1/chat/completions`` on 127.0.0.1 with a free port."""

    def __init__(self, *, answer: str = DEFAULT_ANSWER, model: str = "fake/model") -> None:
        self.answer = answer
        self.model = model
        self.mode = "ok"
        self.retry_after = "17"
        self.delay_s = 5.0
        self.trickle_interval_s = 0.25
        self.oversized_chars = 3_000_000
        # Every request received: {"body": parsed JSON, "headers": lower-cased header dict}.
        self.requests: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the OpenAI client (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        """Bind a free loopback port and serve in a daemon thread until ``stop``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._build_app(), log_level="warning", timeout_graceful_shutdown=1, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Release any handler that is waiting, then shut the server down."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API --------------------------------------------------------------------------

    async def _wait(self, seconds: float) -> None:
        # Sleep in small steps so stop() never waits for a slow handler.
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping.is_set():
            await asyncio.sleep(0.05)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    def _pieces(self) -> list[str]:
        # Split the answer in a few pieces, on word boundaries, so streaming is visible.
        # Their concatenation is exactly the answer.
        words = re.split(r"(?<= )", self.answer)
        step = max(1, len(words) // 4)
        return ["".join(words[i : i + step]) for i in range(0, len(words), step)] or [""]

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            self.requests.append({"body": body, "headers": dict(request.headers)})
            mode = self.mode
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            if mode in ("401", "403"):
                # Real providers echo (part of) the key they were given; our server must not.
                message = f"Incorrect API key provided: {key}"
                return JSONResponse(
                    {"error": {"message": message, "type": "invalid_request_error"}},
                    status_code=int(mode),
                    headers={"x-request-id": f"req-{key}"},
                )
            if mode == "429":
                return JSONResponse(
                    {"error": {"message": f"rate limit for key {key}", "type": "rate_limit"}},
                    status_code=429,
                    headers={"Retry-After": self.retry_after},
                )
            if mode in ("500", "502", "503"):
                return JSONResponse({"error": {"message": "boom"}}, status_code=int(mode))
            if mode == "slow":
                await self._wait(self.delay_s)
            if mode == "hang":
                await self._wait(600)
            if mode == "malformed":
                return Response(b"{this is not json", media_type="application/json")
            if body.get("stream"):
                return StreamingResponse(self._stream(mode), media_type="text/event-stream")
            if mode == "no_choices":
                return JSONResponse(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": self.model,
                        "choices": [],
                    }
                )
            content = "" if mode == "empty_content" else self.answer
            if mode == "oversized":
                content = ("word " * (self.oversized_chars // 5 + 1))[: self.oversized_chars]
            reply = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
            if mode == "trickle":
                return StreamingResponse(
                    self._trickle(json.dumps(reply)), media_type="application/json"
                )
            return JSONResponse(reply)

        return app

    async def _trickle(self, text: str) -> AsyncIterator[bytes]:
        """``text`` one byte at a time, ``trickle_interval_s`` apart (until stop)."""
        for byte in text.encode():
            if self._stopping.is_set():
                return
            yield bytes([byte])
            await self._wait(self.trickle_interval_s)

    async def _stream(self, mode: str) -> AsyncIterator[str | bytes]:
        yield self._chunk({"role": "assistant", "content": ""})
        pieces = self._pieces()
        if mode == "no_choices":
            yield "data: [DONE]\n\n"
            return
        if mode == "empty_content":
            yield self._chunk({}, finish="stop")
            yield "data: [DONE]\n\n"
            return
        yield self._chunk({"content": pieces[0]})
        if mode == "trickle":
            rest = "".join(self._chunk({"content": p}) for p in pieces[1:])
            async for byte in self._trickle(rest + "data: [DONE]\n\n"):
                yield byte
            return
        if mode == "oversized":
            block = ("word " * 13108)[:65536]
            for _ in range(max(1, self.oversized_chars // len(block))):
                yield self._chunk({"content": block})
            yield "data: [DONE]\n\n"
            return
        if mode == "stall_stream":
            await self._wait(self.delay_s)
        elif mode == "cut_stream":
            raise RuntimeError("fake server drops the connection mid-stream")
        elif mode == "error_event":
            yield f"data: {json.dumps({'error': {'message': 'upstream overloaded'}})}\n\n"
            return
        for piece in pieces[1:]:
            yield self._chunk({"content": piece})
        yield self._chunk({}, finish="stop")
        yield "data: [DONE]\n\n"
