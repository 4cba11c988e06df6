"""Admission: the queue's first-come-first-served wait line and the engine's ``admit``.

The queue tests drive the real ``BatchQueue`` on a real event loop, with a consumer that takes
batches exactly as a replica worker does; the engine test uses the tiny checkpoint on the CPU.
Waits are on observable state (futures done, depths), never on elapsed time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qwen_server.engine.batching import BatchQueue, QueueClosed, QueueFull
from qwen_server.engine.lifecycle import Engine
from qwen_server.errors import NotReady, Overloaded

from .engine_fixtures import make_shot, tiny_settings


def _queue(max_items: int = 2, max_waiters: int = 8) -> BatchQueue[int]:
    return BatchQueue(max_items=max_items, max_batch=8, max_wait_s=0.0, max_waiters=max_waiters)


async def _until(predicate, what: str, limit_s: float = 10.0) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def test_wait_line_is_first_come_first_served_and_nobody_jumps_it() -> None:
    async def run() -> list[int]:
        queue = _queue(max_items=2)
        queue.reserve(2)  # full
        granted: list[int] = []

        async def producer(tag: int, n: int) -> None:
            await queue.acquire(n, timeout=60)
            granted.append(tag)
            queue.put([tag] * n)

        tasks = []
        for tag, n in [(1, 2), (2, 1), (3, 1)]:
            tasks.append(asyncio.create_task(producer(tag, n)))
            await _until(lambda t=tag: queue.waiting == t, f"producer {tag} in line")
        assert queue.waiting_items == 4
        # Room for one would fit producer 2's single item, but producer 1 is first in line.
        queue.release(1)
        await asyncio.sleep(0)
        assert granted == []
        with pytest.raises(QueueFull):
            queue.reserve(1)  # a newcomer does not jump the line either
        queue.release(1)  # now empty: producer 1 (2 items) fits, then nothing more
        await _until(lambda: granted == [1], "producer 1 granted")
        batch = await queue.next_batch()  # a consumer takes both items: 2 and 3 get in
        assert batch == [1, 1]
        await asyncio.gather(*tasks)
        assert queue.waiting == 0 and queue.depth == 2
        return granted

    assert asyncio.run(run()) == [1, 2, 3]


def test_wait_times_out_full_line_refuses_and_cancel_gives_room_back() -> None:
    async def run() -> None:
        queue = _queue(max_items=1, max_waiters=1)
        queue.reserve(1)
        with pytest.raises(QueueFull):
            await queue.acquire(1, timeout=0)  # no waiting allowed
        with pytest.raises(QueueFull):
            await queue.acquire(2, timeout=60)  # can never fit
        waiter = asyncio.create_task(queue.acquire(1, timeout=60))
        await _until(lambda: queue.waiting == 1, "waiter in line")
        with pytest.raises(QueueFull):
            await queue.acquire(1, timeout=60)  # the line is full
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert queue.waiting == 0 and queue.depth == 1  # the cancelled one holds nothing

        with pytest.raises(QueueFull, match="within"):
            await queue.acquire(1, timeout=0.01)  # expires; nothing reserved
        assert queue.waiting == 0 and queue.depth == 1

        # Granted and then cancelled before it ran: the room is handed back, not leaked.
        late = asyncio.create_task(queue.acquire(1, timeout=60))
        await _until(lambda: queue.waiting == 1, "late waiter in line")
        queue.release(1)  # grants `late` (depth 1 again) ...
        late.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await late
        assert queue.depth == 0

        queue.reserve(1)
        closing = asyncio.create_task(queue.acquire(1, timeout=60))
        await _until(lambda: queue.waiting == 1, "waiter before close")
        queue.close()
        with pytest.raises(QueueClosed):
            await closing
        with pytest.raises(QueueClosed):
            queue.reserve(1)

    asyncio.run(run())


def test_engine_admit_holds_room_and_refuses_with_its_own_retry_after(
    tiny_model_dir: Path,
) -> None:
    settings = tiny_settings(
        tiny_model_dir,
        server={
            "max_queued_shots": 2,
            "max_shots_per_request": 2,
            "admission_wait_s": 60,
            "max_waiting_requests": 1,
        },
    )
    engine = Engine(settings)
    engine.load()

    async def run() -> None:
        with pytest.raises(NotReady):
            async with engine.admit(1):
                pass  # not started
        await engine.start()
        try:
            with pytest.raises(Overloaded) as too_big:
                async with engine.admit(3):
                    pass
            assert int(too_big.value.headers["Retry-After"]) >= 1

            async with engine.admit(2) as held:  # the whole queue, while "decoding"
                assert engine.queue_depth == 2 and held.active
                second = asyncio.create_task(engine.analyze([make_shot(2, 1)]))
                await _until(lambda: engine.waiting_requests == 1, "second request in line")
                with pytest.raises(Overloaded) as full:  # the line (1 request) is full
                    await engine.analyze([make_shot(3, 1)])
                assert 1 <= int(full.value.headers["Retry-After"]) <= 60
                outs = await engine.analyze([make_shot(1, 1), make_shot(4, 2)], held)
                assert not held.active  # consumed by analyze
            assert [o.counts["prompt_tokens"] for o in outs] == [
                len(engine.prepare(s).input_ids) for s in (make_shot(1, 1), make_shot(4, 2))
            ]
            assert len(await second) == 1

            # Room held but never used (an error while decoding) is given back on exit.
            with pytest.raises(RuntimeError):
                async with engine.admit(2):
                    raise RuntimeError("decoding failed")
            assert engine.queue_depth == 0
            stats = engine.stats()
            assert stats["requests_refused"] == 2 and stats["requests_waited"] == 1
            assert stats["waiting_requests"] == 0 and stats["shots_served"] == 3
        finally:
            await engine.stop(timeout=10)

    asyncio.run(run())
