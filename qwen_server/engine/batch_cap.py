"""The engine-wide batch cap: how many shots one ``generate`` may take right now.

It starts at ``batching.max_batch_size`` (or what the start-up probe chose for ``auto``). An
out-of-memory batch of ``n`` shots lowers it to ``n // 2`` (at least 1) - the size its halves are
retried at - so the queue stops handing out batches that are known not to fit. It is raised
again slowly: after ``recovery_batches`` batches in a row ran at the cap without running out of
memory, by a quarter (at least one shot), never above the maximum. Memory use depends on the
shots (frames, prompt and answer lengths), so a size that failed once may fit later; the slow
rise finds out without a storm of failures, and a size that still does not fit fails once per
``recovery_batches`` batches, costing one retry in halves.

Shared by every replica (each runs on its own thread) and read by the batching queue on the
event loop: updates take a lock; reads of the current value are a plain int read.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("qwen_server.engine")


class BatchCap:
    """An adaptive upper bound on the batch size; see the module docstring."""

    def __init__(self, maximum: int, *, recovery_batches: int = 16) -> None:
        if maximum < 1 or recovery_batches < 1:
            raise ValueError("maximum and recovery_batches must be positive")
        self.maximum = maximum
        self.recovery_batches = recovery_batches
        self._value = maximum
        self._streak = 0  # batches at the cap that succeeded since it last changed
        self.lowered = 0  # times an out-of-memory batch lowered the cap
        self.raised = 0  # times a run of successes raised it
        self.last_oom_size: int | None = None
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        """The most shots a batch may take now (1..maximum)."""
        return self._value

    def set_maximum(self, maximum: int) -> None:
        """A new ceiling (the start-up probe's choice for ``auto``); the cap starts there."""
        if maximum < 1:
            raise ValueError("maximum must be positive")
        with self._lock:
            self.maximum = maximum
            self._value = maximum
            self._streak = 0

    def out_of_memory(self, size: int) -> None:
        """A batch of ``size`` shots ran out of memory: cap at ``size // 2`` (at least 1)."""
        with self._lock:
            self.last_oom_size = size
            new = max(1, min(self._value, size // 2))
            self._streak = 0
            if new == self._value:
                return
            old, self._value = self._value, new
            self.lowered += 1
        logger.warning(
            "batch cap lowered %d -> %d after running out of memory on a batch of %d shots",
            old,
            new,
            size,
        )

    def succeeded(self, size: int) -> None:
        """A batch of ``size`` shots ran without running out of memory.

        Only batches at the cap count towards raising it: a smaller batch says nothing about
        whether a bigger one fits.
        """
        if size < self._value or self._value >= self.maximum:
            return
        with self._lock:
            if size < self._value or self._value >= self.maximum:
                return
            self._streak += 1
            if self._streak < self.recovery_batches:
                return
            old = self._value
            self._value = min(self.maximum, old + max(1, old // 4))
            self._streak = 0
            self.raised += 1
            new = self._value
        logger.info(
            "batch cap raised %d -> %d after %d batches at the cap without running out of memory",
            old,
            new,
            self.recovery_batches,
        )

    def stats(self) -> dict[str, int]:
        """Figures for the engine's ``stats()`` (and so /metrics)."""
        return {
            "batch_cap": self._value,
            "batch_cap_max": self.maximum,
            "batch_cap_lowered": self.lowered,
            "batch_cap_raised": self.raised,
        }
