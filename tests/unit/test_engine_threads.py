"""The thread budget: preparation threads and generate threads each run with their own number
of PyTorch intra-op threads, resolved from the settings and the cores."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from qwen_server.config import Settings
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.thread_budget import ThreadBudget, apply_torch_threads

from .engine_fixtures import tiny_settings


def test_auto_budget_follows_cores_device_and_replicas() -> None:
    auto = Settings()
    cpu = ThreadBudget.resolve(auto, device="cpu", replicas=1, cores=16)
    assert (cpu.prepare_workers, cpu.prepare_torch_threads, cpu.generate_threads) == (8, 2, 16)
    gpu = ThreadBudget.resolve(auto, device="cuda", replicas=1, cores=16)  # the H200 box
    assert (gpu.prepare_workers, gpu.prepare_torch_threads, gpu.generate_threads) == (8, 2, 4)
    assert (
        ThreadBudget.resolve(auto, device="cuda", replicas=1, cores=64).prepare_torch_threads == 8
    )
    assert ThreadBudget.resolve(auto, device="cuda", replicas=8, cores=64).generate_threads == 4
    assert ThreadBudget.resolve(auto, device="cuda", replicas=2, cores=4).generate_threads == 1
    small = ThreadBudget.resolve(auto, device="cpu", replicas=1, cores=2)
    assert (small.prepare_workers, small.prepare_torch_threads, small.generate_threads) == (2, 1, 2)


def test_explicit_settings_are_honoured() -> None:
    settings = Settings(
        server={"prepare_workers": 3, "prepare_torch_threads": 2},
        model={"generate_threads": 5},
    )
    budget = ThreadBudget.resolve(settings, device="cuda", replicas=1, cores=16)
    assert (budget.prepare_workers, budget.prepare_torch_threads, budget.generate_threads) == (
        3,
        2,
        5,
    )


def test_each_thread_keeps_its_own_budget_whoever_sets_one_later() -> None:
    """A thread set to 1 stays at 1 after another thread sets 3 (and after its first op)."""
    one_set, three_set = threading.Event(), threading.Event()

    def first() -> tuple[int, int]:
        apply_torch_threads(1)
        one_set.set()
        three_set.wait(timeout=30)
        before_op = torch.get_num_threads()
        torch.ones(100_000).exp_()  # a parallel op: the lazy per-thread set-up has run
        return before_op, torch.get_num_threads()

    def second() -> int:
        one_set.wait(timeout=30)
        apply_torch_threads(3)
        three_set.set()
        torch.ones(100_000).exp_()
        return torch.get_num_threads()

    with ThreadPoolExecutor(1) as a, ThreadPoolExecutor(1) as b:
        got_first, got_second = a.submit(first), b.submit(second)
        assert got_first.result() == (1, 1)
        assert got_second.result() == 3


def test_engine_threads_run_with_their_budgets(tiny_model_dir: Path) -> None:
    engine = Engine(
        tiny_settings(
            tiny_model_dir,
            server={"prepare_workers": 2, "prepare_torch_threads": 1},
            model={"generate_threads": 2},
        )
    )
    engine.load()

    async def run() -> tuple[list[int], int]:
        await engine.start()
        assert engine._prep_pool is not None
        loop = asyncio.get_running_loop()
        prep = [await loop.run_in_executor(engine._prep_pool, torch.get_num_threads)]
        gen = await loop.run_in_executor(engine._replicas[0].executor, torch.get_num_threads)
        prep.append(await loop.run_in_executor(engine._prep_pool, torch.get_num_threads))
        await engine.stop(10)
        return prep, gen

    prep, gen = asyncio.run(run())
    assert prep == [1, 1] and gen == 2


def test_stop_closes_every_replica_grammar_thread(tiny_model_dir: Path) -> None:
    """The overlapped grammar step runs on a worker thread per replica; stop retires it (a
    server that restarts its engine, or a test session, must not collect idle threads)."""
    from .engine_fixtures import make_shot

    engine = Engine(tiny_settings(tiny_model_dir))
    engine.load()

    async def run() -> list[threading.Thread]:
        await engine.start()
        await engine.analyze([make_shot(1, 2), make_shot(2, 1)])
        executors = [r.generator.grammar_workspace._executor for r in engine._replicas]
        assert all(e is not None for e in executors)  # the overlap path made its threads
        threads = [t for e in executors if e is not None for t in e._threads]
        await engine.stop(10)
        return threads

    threads = asyncio.run(run())
    assert threads  # this engine's grammar threads (other tests' engines may have their own)
    assert all(r.generator.grammar_workspace._executor is None for r in engine._replicas)
    assert not [t for t in threads if t.is_alive()]
