"""The CPU thread budget: preparation threads vs each replica's generate thread.

Preparation (image processor, video packing, the cast to the model's dtype) runs on
``server.prepare_workers`` threads beside the generate threads. Its torch ops are copies and
casts that PyTorch spreads over its intra-op (OpenMP) pool: with the default pool of one
thread per core, 8 preparation threads on 16 cores would ask for 128 busy threads and slow
each other and the generate thread down. So every engine thread gets an explicit budget:

* a preparation thread: ``server.prepare_torch_threads`` (0: auto, the cores divided among
  the preparation threads, at least 1, so preparation alone never asks for more threads than
  cores; profiled here, a 5-frame 448x252 shot spends ~17 % of its ~40 ms of CPU in torch
  copies and casts, the rest in the image processor's single-threaded numpy);
* a replica's generate thread: ``model.generate_threads`` (0: auto, see ``generate_threads``).

How a per-thread budget is applied. ``torch.set_num_threads`` looks process-wide, but with
PyTorch's OpenMP backend it sets the calling thread's OpenMP thread count (plus a stored value
that threads adopt on their *first* parallel op, lazily). So each executor thread, once, at
its start (``ThreadPoolExecutor(initializer=...)``): first forces that lazy adoption
(``torch.get_num_threads()``), then sets its own budget. Without the first step a thread that
set its budget before its first op took whatever another thread had set last (seen here: a
preparation thread set to 1 ran with the generate thread's 2). The stored value is the last
budget set, which threads that set none (none of the engine's) would adopt.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ..config import Settings

logger = logging.getLogger("qwen_server.engine")


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def apply_torch_threads(threads: int) -> None:
    """Give the calling thread ``threads`` intra-op threads (executor initializer)."""
    torch.get_num_threads()  # adopt the stored default now, so it cannot override us later
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class ThreadBudget:
    """Threads for preparation and generation, resolved from the settings and the machine."""

    prepare_workers: int  # preparation threads
    prepare_torch_threads: int  # intra-op threads of each preparation thread
    generate_threads: int  # intra-op threads of each replica's generate thread

    @classmethod
    def resolve(
        cls, settings: Settings, *, device: str, replicas: int, cores: int | None = None
    ) -> ThreadBudget:
        """Fill in the ``0`` (auto) settings for ``cores`` cores (default: this process's)."""
        cores = cores or cpu_cores()
        workers = settings.server.prepare_workers or min(8, max(2, cores // 2))
        prepare = settings.server.prepare_torch_threads or max(1, cores // workers)
        generate = settings.model.generate_threads or auto_generate_threads(
            device=device, replicas=replicas, cores=cores
        )
        return cls(workers, prepare, generate)

    def describe(self) -> str:
        """One line for the start-up log."""
        return (
            f"{self.prepare_workers} preparation x {self.prepare_torch_threads} torch thread(s), "
            f"{self.generate_threads} torch thread(s) per generate thread"
        )

    def preparation_pool(self) -> ThreadPoolExecutor:
        """The engine's preparation threads, each with its own intra-op budget."""
        return ThreadPoolExecutor(
            max_workers=self.prepare_workers,
            thread_name_prefix="qwen-prep",
            initializer=apply_torch_threads,
            initargs=(self.prepare_torch_threads,),
        )

    def generate_executor(self, replica: int) -> ThreadPoolExecutor:
        """The one thread that runs replica ``replica``'s generate calls, with its budget."""
        return ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"qwen-gen-{replica}",
            initializer=apply_torch_threads,
            initargs=(self.generate_threads,),
        )


def auto_generate_threads(*, device: str, replicas: int, cores: int) -> int:
    """``model.generate_threads: 0``.

    On the CPU the generate thread does the model's whole work: each replica gets an equal
    share of the cores (preparation is light beside CPU generation). On a GPU it only
    collates (the staging copy), launches kernels and runs small host ops: a few threads,
    ``cores / (2 x replicas)`` capped at 4, leaving the cores to preparation and the grammar
    threads instead of to idle OpenMP workers spinning between ops.
    """
    share = max(1, cores // max(1, replicas))
    return share if device != "cuda" else max(1, min(4, share // 2))
