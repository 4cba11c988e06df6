"""The model engine: Qwen2-VL loaded on every GPU, fed by one batching queue, JSON-constrained.

Flow of a request::

    admit(n) ─► queue room now, or a place in a first-come-first-served line for up to
    server.admission_wait_s (else Overloaded + Retry-After) ─► the caller decodes frames ─►
    analyze(shots, admission) ─► prepare each shot on a CPU thread
    (image processor, prompt, token ids) ─► queue ─► one worker per model replica takes up to
    the batch cap's shots (batching.max_batch_size, lowered after an out-of-memory batch; waiting
    batching.max_wait_ms to fill) ─► one generate() call
    on that replica's own thread (left padding, all frames of the batch through the vision
    tower together, xgrammar-constrained) ─► parse ─► each caller gets its own results in order

* A replica never runs two generate() calls at once (one worker, one thread per replica), and
  the event loop never waits on the GPU.
* Shot preparation runs on a thread pool while the GPUs work on earlier batches.
* A failing generate() fails only the callers in that batch (an out-of-memory batch is first
  retried in halves); only errors that leave a GPU unusable retire its replica, and the engine is
  marked ``failed`` when no replica is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Settings
from ..errors import ConfigError, EngineFailure, NotReady
from . import checkpoint, placement
from .batch_cap import BatchCap
from .batching import Admission, AdmissionLine, BatchQueue
from .faults import describe_error, scrub_paths
from .generation import BatchGenerator
from .grammar import GrammarCache
from .inputs import ShotPreparer
from .output_parsing import read_answer
from .replicas import Replica, close_replica, load_replicas
from .thread_budget import ThreadBudget
from .types import ModelOutput, PreparedShot, RawResult, ShotInput

# How long stop waits for each replica to finish its running batch before leaving its grammar
# thread behind (only a hung generate takes that long).
REPLICA_CLOSE_WAIT_S = 5.0

logger = logging.getLogger("qwen_server.engine")


@dataclass
class _Item:
    shot: PreparedShot
    future: asyncio.Future[ModelOutput]
    enqueued: float


class Engine:
    """Loads the model on every GPU and serves ``analyze`` through one batching queue.

    ``force_new_tokens`` and ``use_grammar`` exist for benchmarks only: with
    ``force_new_tokens=N`` and ``use_grammar=False`` every answer is exactly N tokens, so
    throughput figures do not depend on what random weights happen to write.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        force_new_tokens: int | None = None,
        use_grammar: bool = True,
    ) -> None:
        self.settings = settings
        self.model_id: str = checkpoint.model_display_id(settings)
        self.device: str = "pending"
        self.placement: str = "pending"
        self.replicas: int = 0
        self.shots_served: int = 0
        self.failed: str | None = None
        self.on_batch: Callable[[int, float], None] | None = None
        self.max_new_tokens: int = settings.model.max_new_tokens
        self._force_new_tokens = force_new_tokens
        self._use_grammar = use_grammar and force_new_tokens is None
        self._loaded = False
        self._started = False
        self._stopping = False
        self._replicas: list[Replica] = []
        self._preparer: ShotPreparer | None = None
        self._grammars: GrammarCache | None = None
        self._prep_pool: ThreadPoolExecutor | None = None
        self._queue: BatchQueue[_Item] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._line: AdmissionLine | None = None  # admission to the queue, from ``start``
        self._cap: BatchCap | None = None  # the engine-wide batch cap, from ``load``

    # -- read-only state --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Loaded, workers running, not draining, not failed."""
        return self._loaded and self._started and not self._stopping and self.failed is None

    @property
    def queue_depth(self) -> int:
        """Shots accepted and not yet in a running batch."""
        return self._queue.depth if self._queue is not None else 0

    @property
    def waiting_requests(self) -> int:
        """Requests in the admission line, waiting for queue room."""
        return self._queue.waiting if self._queue is not None else 0

    def stats(self) -> dict[str, Any]:
        """Serving figures for /health, metrics, tests and benchmarks (no secrets, no paths)."""
        return {
            "ready": self.ready,
            "replicas": self.replicas,
            "live_replicas": sum(1 for r in self._replicas if r.dead is None),
            "queue_depth": self.queue_depth,
            "queue_limit": self.settings.server.max_queued_shots,
            "waiting_requests": self.waiting_requests,
            "waiting_shots": self._queue.waiting_items if self._queue is not None else 0,
            "shots_served": self.shots_served,
            "requests_waited": self._line.waited if self._line is not None else 0,
            "requests_refused": self._line.refused if self._line is not None else 0,
            "shots_per_s": round(self._line.rate, 3) if self._line is not None else 0.0,
            **(self._grammars.stats() if self._grammars is not None else {}),
            **(self._cap.stats() if self._cap is not None else {}),
        }

    # -- direct access for tests and benchmarks (bypasses the queue) ------------------------

    def prepare(self, shot: ShotInput) -> PreparedShot:
        """Turn one shot into model inputs (thread-safe); raises NotReady before ``load``."""
        if self._preparer is None:
            raise NotReady("the model is not loaded")
        return self._preparer.prepare(shot)

    def generator(self, replica: int = 0) -> BatchGenerator:
        """The batch generator of one replica, to run ``generate`` on it directly.

        Not thread-safe: use it only while the engine is not started (or stopped), from one
        thread; on a GPU call ``use_replica_device`` on that thread first.
        """
        if not self._replicas:
            raise NotReady("the model is not loaded")
        return self._replicas[replica].generator

    def use_replica_device(self, replica: int = 0) -> None:
        """Make the replica's GPU the calling thread's current CUDA device (no-op on CPU)."""
        if self._replicas and self._replicas[replica].gpu is not None:
            torch.cuda.set_device(self._replicas[replica].gpu)

    def gpu_info(self) -> list[dict[str, Any]]:
        """Per visible GPU: index, name, memory used/total (MB), utilisation % (None if n/a)."""
        return placement.gpu_info(self.device)

    # -- lifecycle --------------------------------------------------------------------------

    def load(self) -> None:
        """Load tokenizer, image processor, grammar and one model per replica; then warm up.

        Blocking (minutes for big models): call it from a thread. Raises ConfigError when the
        checkpoint cannot be found or used, EngineFailure when the warm-up generation fails;
        ``failed`` is set in both cases.
        """
        try:
            self._load()
        except ConfigError as exc:
            self.failed = scrub_paths(exc.message)  # the exception keeps the full message
            raise
        except Exception as exc:
            self.failed = describe_error(exc)
            logger.exception("model load failed")
            raise EngineFailure(f"model load failed: {describe_error(exc)}") from exc

    def _load(self) -> None:
        t0 = time.perf_counter()
        loaded = load_replicas(
            self.settings,
            self.model_id,
            force_new_tokens=self._force_new_tokens,
            use_grammar=self._use_grammar,
        )
        self.device = loaded.device
        self.max_new_tokens = loaded.max_new_tokens
        self._preparer = loaded.preparer
        self._grammars = loaded.grammars
        self._replicas = loaded.replicas
        self._cap = loaded.batch_cap
        self.placement = loaded.placement
        self.replicas = len(loaded.replicas)
        self._loaded = True
        logger.info(
            "model %s ready: %d replica(s), max_new_tokens=%d, frames_as=%s, loaded in %.1f s",
            self.model_id,
            self.replicas,
            self.max_new_tokens,
            self.settings.model.frames_as,
            time.perf_counter() - t0,
        )

    async def start(self) -> None:
        """Start one batching worker per replica; call inside the running loop, after load."""
        if not self._loaded:
            raise NotReady("the model is not loaded")
        if self._started:
            return
        batching = self.settings.batching
        self._queue = BatchQueue(
            max_items=self.settings.server.max_queued_shots,
            max_batch=self._cap.maximum if self._cap is not None else batching.planned_batch_size,
            max_wait_s=batching.max_wait_ms / 1000.0,
            alive=lambda item: not item.future.done(),
            max_waiters=self.settings.server.max_waiting_requests,
            length=(lambda item: len(item.shot.input_ids)) if batching.bucket_by_length else None,
        )
        self._line = AdmissionLine(self._queue, self.settings.server.admission_wait_s)
        budget = ThreadBudget.resolve(self.settings, device=self.device, replicas=self.replicas)
        logger.info("threads: %s", budget.describe())
        self._prep_pool = budget.preparation_pool()
        loop = asyncio.get_running_loop()
        for replica in self._replicas:
            if replica.gpu is not None:  # the replica thread's current CUDA device, once
                await loop.run_in_executor(replica.executor, torch.cuda.set_device, replica.gpu)
            self._workers.append(
                asyncio.create_task(self._worker(replica), name=f"qwen-batcher-{replica.index}")
            )
        self._started = True

    async def stop(self, timeout: float) -> None:
        """Refuse new work, let queued and running batches finish within ``timeout``, cancel."""
        self._stopping = True
        if self._queue is not None:
            self._queue.close()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=max(0.0, timeout))
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "stop: cancelling %d batch worker(s) after %.1f s", len(pending), timeout
                )
                await asyncio.gather(*pending, return_exceptions=True)
        if self._queue is not None:
            self._fail_items(self._queue.drain(), NotReady("the server is shutting down"))
        for replica in self._replicas:
            replica.executor.shutdown(wait=False, cancel_futures=True)
        # Then each replica's grammar thread, after the batch still running there (a hung
        # generate leaves its closer waiting, never stop itself).
        closing = [
            asyncio.ensure_future(asyncio.to_thread(close_replica, r)) for r in self._replicas
        ]
        if closing and (await asyncio.wait(closing, timeout=REPLICA_CLOSE_WAIT_S))[1]:
            logger.warning("stop: a replica is still generating; its grammar thread stays")
        if self._prep_pool is not None:
            # Let running preparations finish: their callers then get NotReady, not a
            # cancellation they did not ask for.
            self._prep_pool.shutdown(wait=False, cancel_futures=False)

    # -- serving ----------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        if self.failed is not None:
            raise NotReady(f"the model engine failed: {self.failed}", retry_after_s=30)
        if self._stopping:
            raise NotReady("the server is shutting down")
        if not self._loaded or not self._started or self._queue is None:
            raise NotReady("the model is still loading")

    @contextlib.asynccontextmanager
    async def admit(self, shots: int) -> AsyncIterator[Admission]:
        """Hold queue room for ``shots`` shots while the caller gets them ready.

        ``async with engine.admit(n) as admission: ... await engine.analyze(inputs, admission)``.
        Entering waits in the first-come-first-served admission line when the queue is full, for
        up to ``server.admission_wait_s``; it raises Overloaded (503 + Retry-After) when no room
        came in that time, when ``max_waiting_requests`` already wait, or when ``shots`` exceeds
        the queue; NotReady when not serving. Room not used by ``analyze`` is given back on exit.
        This is the only place requests are refused for load, so nothing is decoded for a
        request that will be refused.
        """
        self._check_accepting()
        assert self._line is not None
        admission = await self._line.acquire(shots)
        try:
            yield admission
        finally:
            admission.release()

    async def analyze(
        self, shots: list[ShotInput], admission: Admission | None = None
    ) -> list[ModelOutput]:
        """Analyse shots (merged with other callers' into GPU batches); results in input order.

        ``admission`` is the room granted by ``admit`` for these shots; without one, room is
        acquired here the same way. Raises Overloaded when the queue cannot take them,
        NotReady when not serving, InvalidInput for frames the image processor refuses,
        EngineFailure when generation failed for any of them.
        """
        if admission is None:
            async with self.admit(len(shots)) as own:
                return await self.analyze(shots, own)
        if admission.shots != len(shots) or (shots and not admission.active):
            raise ValueError(
                f"admission for {admission.shots} shots used for {len(shots)} (or used twice)"
            )
        self._check_accepting()
        if not shots:
            return []
        assert self._queue is not None and self._preparer is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        try:
            prepared = await asyncio.gather(
                *(loop.run_in_executor(self._prep_pool, self._preparer.prepare, s) for s in shots)
            )
            self._check_accepting()
            now = time.perf_counter()
            items = [_Item(p, loop.create_future(), now) for p in prepared]
            queue.put(items)
            admission.consume()
        finally:
            admission.release()  # no-op once consumed
        try:
            results = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()  # the workers skip shots nobody waits for
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)  # type: ignore[arg-type]

    async def _worker(self, replica: Replica) -> None:
        """Take batches from the shared queue and run them on this replica, one at a time."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._cap is not None:  # lowered after an OOM, raised slowly (batch_cap.py)
                self._queue.max_batch = self._cap.value
            batch = await self._queue.next_batch()
            if batch is None:
                return
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(
                    replica.executor, replica.generator.run, [i.shot for i in batch]
                )
            except asyncio.CancelledError:
                self._fail_items(batch, NotReady("the server is shutting down"))
                raise
            except BaseException as exc:  # fatal for this replica (see is_fatal)
                reason = describe_error(exc)
                logger.error("replica %d retired after a fatal error: %s", replica.index, reason)
                replica.dead = reason
                self._fail_items(batch, EngineFailure(f"generation failed: {reason}"))
                if all(r.dead for r in self._replicas):
                    self.failed = reason
                    self._fail_items(
                        self._queue.drain(), NotReady(f"the model engine failed: {reason}")
                    )
                return
            elapsed = time.perf_counter() - started
            self._deliver(batch, outcomes, started, elapsed)

    def _deliver(
        self,
        batch: list[_Item],
        outcomes: list[RawResult | BaseException],
        started: float,
        elapsed: float,
    ) -> None:
        cfg = self.settings.model
        served = 0
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(
                    EngineFailure(f"generation failed: {describe_error(outcome)}")
                )
                continue
            output = read_answer(
                outcome,
                item.shot,
                caption_max_chars=cfg.caption_max_chars,
                queue_ms=(started - item.enqueued) * 1000.0,
                generate_ms=elapsed * 1000.0,
                batch_size=len(batch),
            )
            if output.fallback and self._use_grammar:
                logger.warning(
                    "shot %s: incomplete model answer (%s missing)",
                    item.shot.shot_id,
                    ", ".join(output.fallback),
                )
            item.future.set_result(output)
            served += 1
        self.shots_served += served
        if self._line is not None:
            self._line.observe(len(batch), elapsed)
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), elapsed)
            except Exception:  # metrics must never break serving
                logger.exception("on_batch hook failed")

    @staticmethod
    def _fail_items(items: list[_Item], exc: Exception) -> None:
        for item in items:
            if not item.future.done():
                # A copy each: one exception object raised in several tasks would share (and
                # grow) one traceback.
                item.future.set_exception(copy.copy(exc))
