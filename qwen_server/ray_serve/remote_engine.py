"""``RemoteEngine``: the ``EngineClient`` protocol over a Serve handle to the engine deployment.

The ingress's routes, pipeline, health and metrics use it exactly like the local ``Engine``:

* ``analyze`` sends the decoded shots to one engine replica (Serve picks the least loaded, on
  this node first). When that replica dies under the call (its actor killed, its node lost) or
  answers that it is draining or failed, the same shots are sent again: analysis is idempotent
  and nothing was stored yet. After ``ray.retry_attempts`` replicas the caller gets 503 with
  Retry-After, which the client retries; no request is answered 200 without its results.
* ``admit`` only checks that some replica serves: each replica runs its own admission line
  (queue room, Retry-After), so overload is still refused there, with its own Retry-After.
* ``ready``, ``queue_depth``, ``stats`` and ``gpu_info`` are read from the replicas' views: every
  reply carries its replica's view, and a poll keeps them fresh while idle. Views not refreshed
  for a few poll periods are dropped (a replica gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ..engine.batching import Admission
from ..engine.types import ModelOutput, ShotInput
from ..errors import NotReady
from .wire import AnalyzeReply, ReplicaView

logger = logging.getLogger("qwen_server.ray_serve")


@dataclass
class RequestTrace:
    """What the engine calls of one HTTP request did (the ingress's header middleware reads
    it): the replicas that answered, and the calls sent again after their replica was lost."""

    replicas: list[str] = field(default_factory=list)
    retries: int = 0


request_trace: ContextVar[RequestTrace | None] = ContextVar("qwen_request_trace", default=None)

# A call failed because its replica is gone: safe to send the same shots elsewhere.
_REPLICA_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


class RemoteEngine:
    """An ``EngineClient`` whose engine is the Serve deployment behind ``handle``."""

    def __init__(
        self,
        handle: Any,
        *,
        model_id: str,
        retry_attempts: int = 3,
        poll_s: float = 1.0,
        stale_after_s: float = 10.0,
        wait_ready_s: float = 10.0,
    ) -> None:
        self._handle = handle
        self.model_id = model_id
        self.device = "pending"
        self.placement = "pending"
        self.replicas = 0
        self.failed: str | None = None
        self.shots_served = 0
        self.on_batch: Callable[[int, float], None] | None = None  # batches run remotely
        self._retry_attempts = retry_attempts
        self._poll_s = poll_s
        self._stale_after_s = stale_after_s
        self._wait_ready_s = wait_ready_s
        self._views: dict[str, tuple[float, ReplicaView]] = {}
        self._served: dict[str, int] = {}  # shots each replica answered through this ingress
        self._ever_served: dict[str, int] = {}  # last shots_served seen per replica
        self.retries = 0  # analyses sent again after their replica was lost
        self.replicas_lost = 0
        self._stopping = False
        self._poller: asyncio.Task[None] | None = None

    # -- read-outs (EngineClient) -----------------------------------------------------------

    def _fresh(self) -> list[ReplicaView]:
        now = time.monotonic()
        return [v for seen, v in self._views.values() if now - seen <= self._stale_after_s]

    @property
    def ready(self) -> bool:
        """Some engine replica answered recently and serves; this ingress is not stopping."""
        return not self._stopping and any(v.ready for v in self._fresh())

    @property
    def queue_depth(self) -> int:
        """Shots queued in all fresh replicas."""
        return sum(v.queue_depth for v in self._fresh())

    def stats(self) -> dict[str, Any]:
        """Cluster figures: per replica its view, and what this ingress sent where."""
        fresh = self._fresh()
        first = fresh[0].stats if fresh else {}
        return {
            "ready": self.ready,
            "replicas": len(fresh),
            "live_replicas": sum(1 for v in fresh if v.ready),
            "queue_depth": self.queue_depth,
            "shots_served": self.shots_served,
            "batch_cap": min((v.stats.get("batch_cap", 0) for v in fresh), default=0),
            "batch_cap_max": first.get("batch_cap_max", 0),
            "retries": self.retries,
            "replicas_lost": self.replicas_lost,
            "served_by": dict(self._served),
            "engine_replicas": {
                v.replica: {
                    "actor": v.actor,
                    "node": v.node,
                    "ready": v.ready,
                    "device": v.device,
                    "queue_depth": v.queue_depth,
                    "shots_served": v.shots_served,
                }
                for v in fresh
            },
        }

    def gpu_info(self) -> list[dict[str, Any]]:
        """The GPUs of every fresh replica, each tagged with its replica id."""
        return [{**gpu, "replica": v.replica} for v in self._fresh() for gpu in v.gpus]

    def _observe(self, view: ReplicaView) -> None:
        self._views[view.replica] = (time.monotonic(), view)
        self._ever_served[view.replica] = view.shots_served
        # Shots the engine replicas report served, replicas gone since included.
        self.shots_served = sum(self._ever_served.values())
        fresh = self._fresh()
        self.replicas = len(fresh)
        self.device = view.device
        self.placement = view.placement
        self.model_id = view.model_id
        failed = [v.failed for v in fresh if v.failed]
        self.failed = failed[0] if failed and len(failed) == len(fresh) else None

    # -- lifecycle (EngineClient) -----------------------------------------------------------

    def load(self) -> None:
        """Nothing to load here: the engine replicas load the model."""

    async def start(self) -> None:
        """Start polling the engine replicas' views (and take one at once)."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="qwen-ray-engine-poll")

    async def stop(self, timeout: float) -> None:
        """Refuse new work; calls in flight finish on their replicas."""
        self._stopping = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        while True:
            response = self._handle.view.remote()
            try:
                self._observe(await asyncio.wait_for(response, timeout=max(2.0, self._poll_s)))
            except asyncio.CancelledError:
                response.cancel()
                raise
            except TimeoutError:
                response.cancel()  # no replica up yet (loading) or all busy past the poll
            except _REPLICA_LOST:
                pass  # Serve replaces it; the next poll reaches another
            except Exception:
                logger.warning("engine poll failed", exc_info=True)
            await asyncio.sleep(self._poll_s)

    # -- serving (EngineClient) -------------------------------------------------------------

    def _check_accepting(self) -> None:
        if self._stopping:
            raise NotReady("the server is shutting down")
        if not self.ready:
            if self.failed is not None:
                raise NotReady(f"the model engine failed: {self.failed}", retry_after_s=30)
            raise NotReady("no engine replica is serving yet (loading or being replaced)")

    async def wait_ready(self) -> None:
        """When no fresh view shows a serving replica (a new ingress whose poll has not answered
        yet, or a redeploy whose new replicas are starting while the old ones drain), ask the
        replicas again for up to ``wait_ready_s`` before ``_check_accepting`` refuses: the
        request waits like one in the engine's admission line instead of getting 503 at once."""
        deadline = time.monotonic() + self._wait_ready_s
        while not self.ready and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            response = self._handle.view.remote()
            try:
                self._observe(await asyncio.wait_for(response, timeout=left))
            except asyncio.CancelledError:
                response.cancel()
                raise
            except TimeoutError:
                response.cancel()
                return
            except _REPLICA_LOST:
                pass
            if not self.ready:
                await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    @contextlib.asynccontextmanager
    async def admit(self, shots: int) -> AsyncIterator[Admission]:
        """Check that a replica serves; the replica's own admission line holds queue room."""
        await self.wait_ready()
        self._check_accepting()
        yield Admission(None, shots)

    async def analyze(
        self, shots: list[ShotInput], admission: Admission | None = None
    ) -> list[ModelOutput]:
        """Analyse ``shots`` on one engine replica, on another if that one is lost under it."""
        await self.wait_ready()
        self._check_accepting()
        if not shots:
            return []
        trace = request_trace.get()
        last = "no attempt"
        for attempt in range(self._retry_attempts):
            if attempt:
                self.retries += 1
                if trace is not None:
                    trace.retries += 1
                await asyncio.sleep(min(2.0, 0.25 * 2 ** (attempt - 1)))
            response = self._handle.analyze.remote(shots)
            try:
                reply: AnalyzeReply = await response
            except asyncio.CancelledError:
                response.cancel()  # the caller went away: the replica drops its shots
                raise
            except _REPLICA_LOST as exc:
                self.replicas_lost += 1
                last = f"engine replica lost ({type(exc).__name__})"
                logger.warning("analysis of %d shots: %s; trying another", len(shots), last)
                continue
            self._observe(reply.view)
            if reply.error is not None:
                if reply.error.replica_down and attempt + 1 < self._retry_attempts:
                    last = reply.error.message
                    continue
                raise reply.error.error()
            assert reply.outputs is not None
            self._served[reply.view.replica] = self._served.get(reply.view.replica, 0) + len(shots)
            if trace is not None:
                trace.replicas.append(reply.view.replica)
            return reply.outputs
        raise NotReady(
            f"no engine replica could take the request after {self._retry_attempts} "
            f"attempts ({last}); retry",
            retry_after_s=5,
        )
