"""``EngineClient``: what the HTTP layer may use of a model engine (like vLLM's ``EngineClient``).

Routes, the app's lifespan, metrics and the analysis pipeline type their engine with this
``Protocol`` instead of ``Any``; ``lifecycle.Engine`` is the implementation, and a test may pass
any object of the same shape to ``create_app``. The engine is the single owner of its serving
state: readiness, failure, shots served, admission and Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .batching import Admission
from .types import ModelOutput, ShotInput


class EngineClient(Protocol):
    """The model engine as seen from outside: lifecycle, admission, analysis and read-outs."""

    model_id: str
    device: str  # "pending" until loaded, then "cuda" / "cpu"
    placement: str  # "pending", "replicate", "shard" or "cpu"
    replicas: int
    shots_served: int
    failed: str | None  # why the engine cannot serve (path-free), None while healthy
    on_batch: Callable[[int, float], None] | None  # (batch size, seconds) after each batch

    @property
    def ready(self) -> bool:
        """Loaded, workers running, not draining, not failed."""
        ...

    @property
    def queue_depth(self) -> int:
        """Shots accepted and not yet in a running batch."""
        ...

    def stats(self) -> dict[str, Any]:
        """Serving figures (no secrets, no paths)."""
        ...

    def gpu_info(self) -> list[dict[str, Any]]:
        """Per visible GPU: index, name, memory used/total (MB), utilisation %."""
        ...

    def load(self) -> None:
        """Load the model (blocking; run it on a thread)."""
        ...

    async def start(self) -> None:
        """Start serving (inside the running loop, after ``load``)."""
        ...

    async def stop(self, timeout: float) -> None:
        """Refuse new work, finish queued work within ``timeout``, then cancel."""
        ...

    def admit(self, shots: int) -> AbstractAsyncContextManager[Admission]:
        """Hold queue room for ``shots`` (Overloaded with Retry-After, or NotReady, if not)."""
        ...

    async def analyze(
        self, shots: list[ShotInput], admission: Admission | None = None
    ) -> list[ModelOutput]:
        """Analyse shots in GPU batches; results in input order."""
        ...
