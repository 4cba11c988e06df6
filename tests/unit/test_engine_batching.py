"""Length bucketing in the batching window: little padding, the oldest always served, no one
passed over more than ``MAX_SKIPS`` times; FIFO when everything waiting fits one batch."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

from qwen_server.engine import length_buckets
from qwen_server.engine.batching import BatchQueue
from qwen_server.engine.lifecycle import Engine

from .engine_fixtures import make_shot, tiny_settings

SHORT, LONG = 520, 1290  # prompt tokens of a 1-frame and an 8-frame clip at 448x448 (Qwen2-VL)


@dataclass(eq=False)
class _Shot:
    order: int
    tokens: int
    dead: bool = False


def _drain(shots: list[_Shot], batch: int, bucket: bool) -> list[list[_Shot]]:
    """Every batch ``next_batch`` hands out for a backlog of ``shots`` (arrival order)."""

    async def run() -> list[list[_Shot]]:
        queue: BatchQueue[_Shot] = BatchQueue(
            max_items=len(shots),
            max_batch=batch,
            max_wait_s=0.0,
            alive=lambda s: not s.dead,
            length=(lambda s: s.tokens) if bucket else None,
        )
        queue.reserve(len(shots))
        queue.put(shots)
        queue.close()  # hand out what is queued, then None
        batches = []
        while (got := await queue.next_batch()) is not None:
            batches.append(got)
        return batches

    return asyncio.run(run())


def _waste(batches: list[list[_Shot]]) -> float:
    pad = sum(length_buckets.padding_tokens([s.tokens for s in b]) for b in batches)
    slots = sum(len(b) * max(s.tokens for s in b) for b in batches)
    return pad / slots


def _mixed(n: int, seed: int = 7) -> list[_Shot]:
    rng = random.Random(seed)
    return [_Shot(i, rng.choice((SHORT, LONG)) + rng.randrange(-20, 21)) for i in range(n)]


def test_mixed_shots_pad_far_less_and_everyone_is_served() -> None:
    shots = _mixed(256)
    fifo = _drain(shots, 32, bucket=False)
    bucketed = _drain(shots, 32, bucket=True)
    assert sorted(s.order for b in bucketed for s in b) == list(range(256))
    assert [len(b) for b in bucketed] == [32] * 8  # full batches, as many as FIFO
    before, after = _waste(fifo), _waste(bucketed)
    print(
        f"padding waste, 1- and 8-frame shots at batch 32: FIFO {before:.1%}, bucketed {after:.1%}"
    )
    assert after < before / 3


def test_the_oldest_is_always_in_and_nobody_is_passed_over_too_often() -> None:
    shots = _mixed(300, seed=3)
    batches = _drain(shots, 16, bucket=True)
    waiting = list(shots)
    passed_over = {s.order: 0 for s in shots}
    for batch in batches:
        assert waiting[0] in batch  # the oldest waiting shot
        youngest = max(s.order for s in batch)
        for shot in waiting:
            if shot not in batch and shot.order < youngest:  # overtaken by a younger shot
                passed_over[shot.order] += 1
        waiting = [s for s in waiting if s not in batch]
    assert not waiting
    assert max(passed_over.values()) <= length_buckets.MAX_SKIPS


def test_fifo_while_everything_fits_and_dead_shots_are_dropped() -> None:
    shots = _mixed(10)
    assert [[s.order for s in b] for b in _drain(shots, 16, bucket=True)] == [list(range(10))]
    shots = _mixed(40)
    for s in shots[::3]:
        s.dead = True
    served = [s.order for b in _drain(shots, 8, bucket=True) for s in b]
    assert sorted(served) == [s.order for s in shots if not s.dead]


def test_choose_keeps_the_batch_full_and_respects_forced_shots() -> None:
    lengths = [900, 100, 100, 100, 900, 900, 100, 900]
    assert length_buckets.choose(lengths, [0] * 8, 4) == [0, 4, 5, 7]  # the oldest is long
    assert length_buckets.choose([100, *lengths[1:]], [0] * 8, 4) == [0, 1, 2, 3]
    skips = [0, 0, 0, 0, 0, 0, 0, length_buckets.MAX_SKIPS]
    # a forced long shot makes it a long batch: the forced shots' longest gives the class
    assert length_buckets.choose([100, *lengths[1:]], skips, 4) == [0, 4, 5, 7]
    assert length_buckets.padding_tokens([100, 300]) == 200


def test_the_engine_buckets_by_prompt_tokens(tiny_model_dir: Path) -> None:
    """Real prepared shots: batches of 1-frame and 8-frame shots come out unmixed."""
    settings = tiny_settings(
        tiny_model_dir,
        model={"frames_as": "images"},  # 1 vs 8 images: prompts ~40 % apart
        batching={"max_batch_size": 2, "max_wait_ms": 0, "bucket_by_length": True},
    )
    engine = Engine(settings)
    engine.load()
    sizes: list[set[int]] = []

    async def run() -> None:
        await engine.start()
        engine.on_batch = lambda n, s: None
        assert engine._queue is not None
        original = engine._queue.next_batch

        async def recording() -> list | None:
            batch = await original()
            if batch:
                sizes.append({len(i.shot.input_ids) for i in batch})
            return batch

        engine._queue.next_batch = recording  # type: ignore[method-assign]
        shots = [make_shot(i, 1 if i % 2 else 8, (112, 112)) for i in range(8)]
        results = await engine.analyze(shots)
        assert len(results) == 8
        await engine.stop(30)

    asyncio.run(run())
    assert sizes and all(len(s) == 1 for s in sizes)  # no batch mixes the two kinds
