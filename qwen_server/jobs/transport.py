"""``InProcessServers``: what ``client.pipeline.sinks.Poster`` needs of the client's
``ServerPool`` (``options``, ``on_wait``, ``drop_unreachable``, ``analyze_batch``, ``abort``,
``summary``, ``close``), served by this process's engine instead of HTTP.

A job's posting threads call ``analyze_batch``; it runs
``qwen_server.analysis.pipeline.analyze_shots`` on the server's event loop (the engine's queue
is fed exactly as ``/analyze_batch`` feeds it, no HTTP hop), stores the batch in the session
with ``store.save_results`` (an upsert: a batch analysed again after a restart replaces its
rows), and answers the client's ``BatchResult``. The model still loading or the queue full is
waited out, like the pool waits for a server; a stop (cancel, shutdown) ends the wait at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from client.api.responses import BatchResult
from client.options import AttributeRequest, PostingOptions

from ..analysis.pipeline import analyze_shots
from ..contract.analysis import ShotIn
from ..errors import EngineFailure, NotReady, Overloaded

log = logging.getLogger("qwen_server.jobs")

SERVER_NAME = "in-process"
POLL_S = 0.2


class JobStopped(Exception):
    """The job was told to stop (``reason``: "cancelled", "shutdown", or "lost": another node
    took the job over)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"job stopped ({reason})")
        self.reason = reason


class StopFlag:
    """Set once with the reason a job must stop; read by every thread of the job."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise JobStopped when set."""
        if self._event.is_set():
            raise JobStopped(self.reason or "cancelled")

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, raising JobStopped as soon as the flag is set."""
        self._event.wait(seconds)
        self.check()


class InProcessServers:
    """The engine of this server as the client's server pool (see the module doc)."""

    def __init__(
        self,
        state: Any,
        loop: asyncio.AbstractEventLoop,
        options: PostingOptions,
        stop: StopFlag,
    ) -> None:
        self.state = state  # the app's state: engine, settings, store, decode_pool, metrics
        self.loop = loop
        self.options = options
        self.stop = stop
        self.on_wait: Callable[[str | None], None] | None = None
        self._stats = {"ok": 0, "failed": 0}

    # --- the ServerPool interface Poster and analyze() use -----------------------------------
    def drop_unreachable(self) -> None:
        """Nothing to drop: the engine is this process's."""

    def summary(self) -> dict[str, dict[str, int]]:
        return {SERVER_NAME: dict(self._stats)}

    def abort(self) -> None:
        """Posting threads stop waiting (called by Poster when the run fails or stops)."""
        self.stop.set("cancelled")

    def close(self) -> None:
        self.abort()

    def analyze_batch(
        self,
        shots: list[dict[str, Any]],
        session_id: str | None = None,
        title: str | None = None,
        attributes: AttributeRequest | None = None,
    ) -> BatchResult:
        """Analyse one batch in-process and store it in the session (see the module doc)."""
        models = [ShotIn.model_validate(s) for s in shots]
        requested = attributes.request_items() if attributes is not None else None
        while True:
            self.stop.check()
            engine = self._ready_engine()
            if engine is None:
                continue
            try:
                results = self._on_loop(models, engine, requested)
                break
            except (Overloaded, NotReady) as exc:
                # The engine's own back-pressure: wait as a client would, then try again.
                self._notify(f"waiting for the engine ({exc.message})")
                self.stop.wait(float(exc.headers.get("Retry-After", "1")))
        self._notify(None)
        dumped = [r.model_dump() for r in results]
        self.state.metrics.observe_fallbacks(r.fallback for r in results)
        if session_id:
            # A store failure fails the job (its message says why): a job's session must hold
            # every shot, and a resume analyses the unstored batches again.
            self.state.store.save_results(session_id, dumped, title=title, model=engine.model_id)
        self._stats["ok"] += 1
        return BatchResult(
            results=dumped,
            model=engine.model_id,
            server=SERVER_NAME,
            stored=True if session_id else None,
        )

    # --- helpers -------------------------------------------------------------------------------
    def _ready_engine(self) -> Any | None:
        """The engine when serving; None after a short wait while it loads; EngineFailure when
        it failed to load or crashed."""
        engine = self.state.engine
        if engine is not None and engine.ready:
            return engine
        if self.state.run.load_error or (engine is not None and engine.failed):
            raise EngineFailure("the model failed to load or crashed (see the server log)")
        self._notify("waiting for the model to load")
        self.stop.wait(0.5)
        return None

    def _on_loop(self, models: list[ShotIn], engine: Any, requested: Any) -> list[Any]:
        future = asyncio.run_coroutine_threadsafe(
            analyze_shots(
                models,
                settings=self.state.settings,
                engine=engine,
                pool=self.state.decode_pool,
                attributes=requested,
            ),
            self.loop,
        )
        started = time.monotonic()
        while True:
            try:
                return future.result(timeout=POLL_S)
            except FutureTimeout:
                if self.stop.is_set():
                    future.cancel()  # the task gives its admission back to the engine
                    self._stats["failed"] += 1
                    self.stop.check()
                if time.monotonic() - started > 3600:
                    future.cancel()
                    raise EngineFailure("a batch took over an hour in the engine") from None

    def _notify(self, message: str | None) -> None:
        if self.on_wait is not None:
            self.on_wait(message)
