"""The engine replica: one ``Engine`` (one GPU, or the CPU) as a Ray Serve deployment.

Serve starts one replica per GPU (``ray_actor_options.num_gpus = 1`` makes Ray give each its own
``CUDA_VISIBLE_DEVICES``, so the engine inside sees one GPU and runs one model copy), routes
``analyze`` calls to the least loaded one, and scales their number on queue depth. Inside a
replica nothing changes: the engine's own queue merges the calls it takes at once
(``max_ongoing_requests`` >= the batch size) into GPU batches.

* Start-up: ``__init__`` loads the model and starts the engine; Serve sends nothing to a replica
  before its constructor returns, and a constructor that raises (checkpoint not found) fails the
  deployment, which ``serve.run`` reports.
* Health: ``check_health`` raises once the engine failed (no model copy left), so Serve replaces
  the replica instead of routing to it.
* Drain: on scale-down Serve stops routing to the replica and waits for its ongoing calls (up to
  ``graceful_shutdown_timeout_s``); ``__del__`` then stops the engine with the same timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import ray
from ray import serve

from ..config import Settings
from ..engine.types import ShotInput
from ..errors import NotReady, QwenServerError
from .wire import AnalyzeReply, ErrorReply, ReplicaView

logger = logging.getLogger("qwen_server.ray_serve")


class EngineReplica:
    """A Serve deployment class wrapping one ``qwen_server.engine.lifecycle.Engine``."""

    # Serve awaits an async constructor; mypy only knows plain ones.
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        from ..__main__ import configure_logging
        from ..engine.lifecycle import Engine

        configure_logging(settings.server.log_level)
        self._settings = settings
        self._engine = Engine(settings)
        self._draining = False
        context = serve.get_replica_context()
        self._replica = context.replica_id.unique_id
        runtime = ray.get_runtime_context()
        self._actor = runtime.get_actor_name() or ""
        self._node = runtime.get_node_id()
        await asyncio.to_thread(self._engine.load)
        await self._engine.start()
        self._stopped = False
        logger.info(
            "engine replica %s ready: %s on %s (%d model copies)",
            self._replica,
            self._engine.model_id,
            self._engine.device,
            self._engine.replicas,
        )

    def view(self) -> ReplicaView:
        """This replica's serving state (the ingress polls it for /health and /metrics)."""
        engine = self._engine
        return ReplicaView(
            replica=self._replica,
            actor=self._actor,
            node=self._node,
            ready=engine.ready,
            failed=engine.failed,
            draining=self._draining,
            model_id=engine.model_id,
            device=engine.device,
            placement=engine.placement,
            replicas=engine.replicas,
            shots_served=engine.shots_served,
            queue_depth=engine.queue_depth,
            stats=engine.stats(),
            gpus=engine.gpu_info() if engine.device == "cuda" else [],
        )

    async def analyze(self, shots: list[ShotInput]) -> AnalyzeReply:
        """Analyse shots through this replica's engine (its admission line, its batches).

        Domain errors come back as an ``ErrorReply``; ``replica_down`` tells the ingress that
        another replica may take the same shots (this one is draining or failed)."""
        try:
            outputs = await self._engine.analyze(shots)
        except NotReady as exc:
            down = self._draining or self._engine.failed is not None or not self._engine.ready
            return AnalyzeReply(self.view(), error=ErrorReply.of(exc, replica_down=down))
        except QwenServerError as exc:
            return AnalyzeReply(self.view(), error=ErrorReply.of(exc, replica_down=False))
        return AnalyzeReply(self.view(), outputs=outputs)

    def check_health(self) -> None:
        """Serve's health check: raises when the engine can no longer serve."""
        if self._engine.failed is not None:
            raise RuntimeError(f"engine failed: {self._engine.failed}")

    def __del__(self) -> Awaitable[None] | None:
        """Serve calls this after the replica's ongoing calls drained: stop the engine.

        Not ``async def``: Python also calls ``__del__`` when the object is collected, and a
        coroutine made then would never be awaited. Serve awaits what its one call returns;
        any other call (collection, a replica that never started) returns None."""
        if getattr(self, "_stopped", True):
            return None
        self._stopped = True
        return self._stop()

    async def _stop(self) -> None:
        self._draining = True
        await self._engine.stop(timeout=self._settings.ray.graceful_shutdown_timeout_s)
        logger.info("engine replica %s stopped", self._replica)

    def __repr__(self) -> str:
        return f"EngineReplica({self._replica})"


def engine_deployment_options(settings: Settings, gpus: float, max_replicas: int) -> dict[str, Any]:
    """``serve.deployment`` options of the engine from the ``ray`` settings (see config.yaml).

    ``gpus`` is what each replica reserves (1: one replica per GPU, 0: CPU replicas);
    ``max_replicas`` is the resolved autoscaling ceiling."""
    ray_cfg = settings.ray
    initial = ray_cfg.initial_replicas or ray_cfg.min_replicas
    return {
        "name": "Engine",
        "ray_actor_options": {"num_gpus": gpus, "num_cpus": ray_cfg.cpus_per_replica},
        "max_ongoing_requests": ray_cfg.replica_max_ongoing(settings.batching.planned_batch_size),
        "autoscaling_config": {
            "min_replicas": ray_cfg.min_replicas,
            "max_replicas": max_replicas,
            "initial_replicas": min(max(initial, ray_cfg.min_replicas), max_replicas),
            "target_ongoing_requests": ray_cfg.target_ongoing_requests,
            "upscale_delay_s": ray_cfg.upscale_delay_s,
            "downscale_delay_s": ray_cfg.downscale_delay_s,
        },
        "graceful_shutdown_timeout_s": ray_cfg.graceful_shutdown_timeout_s,
        "health_check_period_s": ray_cfg.health_check_period_s,
        "health_check_timeout_s": ray_cfg.health_check_timeout_s,
    }
