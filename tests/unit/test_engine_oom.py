"""Out-of-memory handling that really frees memory, on the real model code path.

A forward hook on the tiny model allocates a big tensor for real (256 MiB, every page touched)
and then raises ``torch.OutOfMemoryError`` for batches above a size, as a real allocator would
part-way through a forward pass: the failed attempt's frames hold that tensor and the logits.
The tests watch, from inside the retried forward passes, that those tensors are gone (weak
references dead; on the CPU resident memory back down, on a GPU ``memory_allocated`` back down)
before the halves run, that the answers equal one-at-a-time ones, that the engine-wide batch
cap drops and rises again, and that the errors handed back hold no frames.

``test_oom_drill_frees_memory_before_the_halves[cuda]`` is the GPU OOM drill (marked gpu):
``pytest tests/unit/test_engine_oom.py -m gpu`` runs it on the tiny checkpoint on CUDA.
"""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_server.engine.batch_cap import BatchCap
from qwen_server.engine.generation import BatchGenerator
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.types import RawResult
from qwen_server.http.metrics import Metrics

from .engine_fixtures import make_shot, tiny_settings

BIG_BYTES = 256 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss_bytes()


@dataclass
class OomHook:
    """Allocates ``BIG_BYTES`` then raises OOM on forward passes of more than ``limit`` rows."""

    device: torch.device
    limit: int
    refs: list[weakref.ref] = field(default_factory=list)  # what failed attempts allocated
    failed_at: list[int] = field(default_factory=list)  # memory in use just before raising
    # Per forward pass after a failure: (batch rows, tensors of failed attempts still alive,
    # memory in use) - seen from inside the retry, i.e. before the halves' own work.
    after_failure: list[tuple[int, int, int]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # rows of every prefill

    def __call__(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        rows, length = kwargs["input_ids"].shape
        if length == 1:
            return  # a decode step (one new token per row): only prefills count here
        self.sizes.append(rows)
        if self.refs:
            gc.collect()  # only to make the weak references exact; the engine did its own
            alive = sum(1 for r in self.refs if r() is not None)
            self.after_failure.append((rows, alive, _allocated(self.device)))
        if rows <= self.limit:
            return
        big = torch.ones(BIG_BYTES // 4, dtype=torch.float32, device=self.device)
        self.refs += [weakref.ref(big), weakref.ref(output.logits)]
        self.failed_at.append(_allocated(self.device))
        raise torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate {BIG_BYTES} bytes (injected, {rows} rows)"
        )


def _hooked(generator: BatchGenerator, limit: int) -> tuple[OomHook, Any]:
    hook = OomHook(generator.device, limit)
    handle = generator.model.register_forward_hook(hook, with_kwargs=True)
    return hook, handle


def _check_freed(hook: OomHook) -> None:
    assert hook.failed_at and hook.after_failure
    for rows, alive, in_use in hook.after_failure:
        assert alive == 0, f"{alive} tensors of a failed batch alive at a retry of {rows}"
        # The 256 MiB of the failed attempt came back before the retry ran (half of it as a
        # margin for what else the process allocated meanwhile).
        assert in_use < max(hook.failed_at) - BIG_BYTES // 2, (in_use, hook.failed_at)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_oom_drill_frees_memory_before_the_halves(tiny_model_dir: Path, device: str) -> None:
    # float32 on every device: the drill is about memory, and its answers are compared exactly
    # with one-at-a-time (bf16 on CUDA would make batched and alone differ in the last bits).
    engine = Engine(tiny_settings(tiny_model_dir, model={"device": device, "dtype": "float32"}))
    engine.load()
    engine.use_replica_device(0)
    generator = engine.generator(0)
    shots = [engine.prepare(make_shot(40 + i, 1 + i % 3)) for i in range(8)]
    expected = [generator.generate([s])[0].text for s in shots]
    generator.batch_cap = cap = BatchCap(8, recovery_batches=100)
    hook, handle = _hooked(generator, limit=2)
    try:
        results = generator.run(shots)
    finally:
        handle.remove()
    assert all(isinstance(r, RawResult) for r in results), results
    assert [r.text for r in results] == expected  # type: ignore[union-attr]
    # 8 fails, 4 fails, 2 + 2 run, the other 4 fails, 2 + 2 run.
    assert hook.sizes == [8, 4, 2, 2, 4, 2, 2]
    _check_freed(hook)
    assert cap.value == 2 and cap.lowered == 2 and cap.last_oom_size == 4


@pytest.mark.allow_error_logs
def test_returned_errors_hold_no_frames(tiny_model_dir: Path) -> None:
    engine = Engine(tiny_settings(tiny_model_dir))
    engine.load()
    generator = engine.generator(0)
    shots = [engine.prepare(make_shot(60 + i, 1)) for i in range(2)]
    hook, handle = _hooked(generator, limit=0)  # even one shot runs out of memory
    try:
        errors = generator.run(shots)
    finally:
        handle.remove()
    assert hook.sizes == [2, 1, 1]
    _check_freed(hook)
    gc.collect()
    assert all(r() is None for r in hook.refs)  # nothing the caller got keeps them alive
    for error in errors:
        assert isinstance(error, torch.OutOfMemoryError) and "injected" in str(error)
        assert error.__traceback__ is None and error.__context__ is None
        assert error.__cause__ is None

    # Any other error: logged with its traceback, handed back without it, its tensors freed.
    kept: list[weakref.ref] = []

    def broken(*args: Any, **kwargs: Any) -> None:
        tensor = torch.ones(1 << 20)
        kept.append(weakref.ref(tensor))
        raise ValueError("something broke in generate")

    original, generator.generate = generator.generate, broken  # type: ignore[method-assign]
    try:
        errors = generator.run(shots)
    finally:
        generator.generate = original  # type: ignore[method-assign]
    gc.collect()
    assert kept and kept[0]() is None
    assert [type(e) for e in errors] == [ValueError, ValueError]
    assert all(e.__traceback__ is None for e in errors)  # type: ignore[union-attr]


def test_a_batch_above_the_cap_runs_in_chunks(tiny_model_dir: Path) -> None:
    """A batch taken before another replica lowered the cap runs at most the cap at a time."""
    engine = Engine(tiny_settings(tiny_model_dir))
    engine.load()
    generator = engine.generator(0)
    generator.batch_cap = BatchCap(8)
    generator.batch_cap.out_of_memory(6)  # another replica's OOM: the cap is 3
    shots = [engine.prepare(make_shot(80 + i, 1)) for i in range(8)]
    expected = [generator.generate([s])[0].text for s in shots]
    hook, handle = _hooked(generator, limit=8)
    try:
        results = generator.run(shots)
    finally:
        handle.remove()
    assert hook.sizes == [3, 3, 2]
    assert [r.text for r in results] == expected  # type: ignore[union-attr]


def test_engine_batch_cap_drops_after_oom_and_rises_again(tiny_model_dir: Path) -> None:
    """Through the queue: an OOM lowers the cap, the queue then hands out at most the cap, and
    batches that succeed at the cap raise it back to batching.max_batch_size."""
    settings = tiny_settings(
        tiny_model_dir,
        batching={"max_batch_size": 8, "max_wait_ms": 300, "cap_recovery_batches": 1},
    )
    engine = Engine(settings)
    engine.load()
    generator = engine.generator(0)
    sizes: list[int] = []
    engine.on_batch = lambda size, seconds: sizes.append(size)
    metrics = Metrics(lambda: engine)
    callers = [[make_shot(200 + 10 * c + i, 1) for i in range(4)] for c in range(2)]
    hook, handle = _hooked(generator, limit=2)

    async def run() -> None:
        await engine.start()
        try:
            first = await asyncio.gather(*(engine.analyze(shots) for shots in callers))
            assert [len(r) for r in first] == [4, 4]
            stats = engine.stats()
            assert stats["batch_cap_lowered"] >= 2 and stats["batch_cap"] <= 3, stats
            assert stats["batch_cap_max"] == 8
            assert f"qwen_batch_cap {float(stats['batch_cap'])}" in metrics.render().decode()
            _check_freed(hook)

            hook.limit = 8  # memory is back: batches at the cap succeed and raise it
            low = engine.stats()["batch_cap"]
            seen = len(sizes)
            for _ in range(8):
                await asyncio.gather(*(engine.analyze(shots) for shots in callers))
                if engine.stats()["batch_cap"] == 8:
                    break
            assert max(sizes[seen : seen + 1]) <= low  # the queue took at most the cap
            stats = engine.stats()
            assert stats["batch_cap"] == 8 and stats["batch_cap_raised"] >= 2, (stats, sizes)
        finally:
            await engine.stop(timeout=10)

    try:
        asyncio.run(run())
    finally:
        handle.remove()
