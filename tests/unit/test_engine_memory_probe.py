"""``batching.max_batch_size: auto``: the probe's arithmetic, its retry on an OOM, the setting
through settings, environment and CLI, and the whole probe with the tiny model (CPU; CUDA
where there is one, marked gpu)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_server.__main__ import _overrides, _parse_args
from qwen_server.config import AUTO_PLANNED_BATCH, Settings, load_settings
from qwen_server.engine import memory_probe
from qwen_server.engine.batch_cap import BatchCap
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.types import PreparedShot
from qwen_server.errors import ConfigError

from .engine_fixtures import make_shot, tiny_settings

GiB = 1 << 30


def test_choose_batch_size_arithmetic() -> None:
    choose = memory_probe.choose_batch_size
    # 100 GiB free, 10 % margin, 1 GiB headroom, 2 GiB fixed: 87 GiB for shots of 1 GiB.
    args = {"free_bytes": 100 * GiB, "fixed_bytes": 2 * GiB, "headroom_bytes": GiB}
    assert choose(per_shot_bytes=GiB, **args) == 87
    assert choose(per_shot_bytes=GiB / 2, **args) == 174
    assert choose(per_shot_bytes=1024, **args) == memory_probe.AUTO_CEILING
    assert choose(per_shot_bytes=0, **args) == memory_probe.AUTO_CEILING
    assert choose(per_shot_bytes=200 * GiB, **args) == 1  # smaller shots may still run
    assert choose(per_shot_bytes=GiB, margin=0.5, **args) == 47
    # The two-point line: batch 1 needs 3 GiB, batch 4 needs 6 GiB -> 1 GiB a shot + 2 fixed.
    assert memory_probe.line_through({1: 3 * GiB, 4: 6 * GiB}) == (GiB, 2 * GiB)
    # A flat line (noise) still charges each shot half its share of the bigger batch.
    per_shot, fixed = memory_probe.line_through({1: 4 * GiB, 4: 4 * GiB})
    assert per_shot == GiB / 2 and fixed == 3.5 * GiB


class FakeGenerator:
    """Records batch sizes; runs out of memory above ``fits`` shots."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.sizes: list[int] = []
        self.last = 0

    def generate(self, shots: list[Any], *, exact_length: bool | None = None) -> list[Any]:
        assert exact_length is True  # the probe forces whole answers
        self.sizes.append(len(shots))
        self.last = len(shots)
        if len(shots) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return []


class FakeMeter:
    """Peak = 2 GiB + 1 GiB per shot of the last batch (two devices, the second tighter)."""

    headroom_bytes = GiB

    def __init__(self, generator: FakeGenerator) -> None:
        self.generator = generator

    def start(self) -> None:
        pass

    def peaks(self) -> list[int]:
        need = 2 * GiB + self.generator.last * GiB
        return [need, need]

    def free(self) -> list[int]:
        return [100 * GiB, 50 * GiB]


def test_probe_retries_smaller_after_an_oom_and_takes_the_tightest_device() -> None:
    shot = PreparedShot(
        shot_id=0,
        input_ids=[1] * 500,
        pixel_values=torch.zeros(1),
        grid_thw=torch.zeros(1, 3),
        kind="video",
        seconds_per_grid=1.0,
        max_new_tokens=90,
    )
    generator = FakeGenerator(fits=2)
    result = memory_probe.probe_replica(generator, FakeMeter(generator), shot)
    assert generator.sizes == [1, 4, 2]  # 4 ran out of memory: the second point is 2
    # Tightest device: 50 GiB * 0.9 - 1 GiB headroom - 2 GiB fixed = 42 GiB of 1 GiB shots.
    assert result.chosen == 42 and result.free_bytes == 50 * GiB
    assert result.per_shot_bytes == GiB and result.fixed_bytes == 2 * GiB
    assert "42 (per shot 1024.0 MiB" in result.describe()

    nothing_fits = FakeGenerator(fits=0)
    assert memory_probe.probe_replica(nothing_fits, FakeMeter(nothing_fits), shot).chosen == 1


def test_auto_through_settings_env_and_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().batching.max_batch_size == 32  # the default is unchanged
    monkeypatch.setenv("QWEN_BATCHING__MAX_BATCH_SIZE", "auto")
    batching = Settings().batching
    assert batching.max_batch_size == "auto" and batching.planned_batch_size == AUTO_PLANNED_BATCH
    monkeypatch.setenv("QWEN_BATCHING__MAX_BATCH_SIZE", "48")
    assert Settings().batching.max_batch_size == 48
    monkeypatch.setenv("QWEN_BATCHING__MAX_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="QWEN_BATCHING__MAX_BATCH_SIZE.*'auto' or an integer"):
        load_settings(None)
    monkeypatch.delenv("QWEN_BATCHING__MAX_BATCH_SIZE")
    overrides = _overrides(_parse_args(["--max-batch-size", "auto"]))
    assert load_settings(None, **overrides).batching.max_batch_size == "auto"
    overrides = _overrides(_parse_args(["--max-batch-size", "16"]))
    assert load_settings(None, **overrides).batching.max_batch_size == 16


def test_batch_cap_drops_and_rises_slowly() -> None:
    cap = BatchCap(32, recovery_batches=3)
    cap.out_of_memory(32)
    assert cap.value == 16 and cap.lowered == 1
    cap.out_of_memory(24)  # a smaller failing batch than the cap: down to its half
    assert cap.value == 12
    for _ in range(2):
        cap.succeeded(12)
    cap.succeeded(5)  # below the cap: says nothing about bigger batches
    assert cap.value == 12
    cap.succeeded(12)
    assert cap.value == 15 and cap.raised == 1  # +a quarter after 3 at the cap
    for size in [15] * 3 + [18] * 3 + [22] * 3 + [27] * 3 + [32] * 3:
        cap.succeeded(size)
    assert cap.value == 32  # never above the maximum
    cap.out_of_memory(1)
    assert cap.value == 1  # a single shot that failed: at least 1
    cap.set_maximum(64)
    assert cap.value == 64 and cap.stats()["batch_cap_max"] == 64


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_auto_probes_and_serves(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture, device: str
) -> None:
    """The whole probe on the real model: memory measured (resident memory on the CPU, the
    allocator's peaks on CUDA), a size chosen and used."""
    caplog.set_level(logging.INFO, logger="qwen_server.engine")
    settings = tiny_settings(
        tiny_model_dir, model={"device": device}, batching={"max_batch_size": "auto"}
    )
    engine = Engine(settings)
    engine.load()
    chosen = engine.stats()["batch_cap_max"]
    assert 1 <= chosen <= memory_probe.AUTO_CEILING
    assert engine.stats()["batch_cap"] == chosen
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"batching.max_batch_size auto -> {chosen} " in m for m in messages), messages
    assert any("fits" in m and "per shot" in m and "MiB free" in m for m in messages), messages

    async def run() -> list[Any]:
        await engine.start()
        try:
            return await engine.analyze([make_shot(1, 2), make_shot(2, 3)])
        finally:
            await engine.stop(timeout=10)

    assert len(asyncio.run(run())) == 2
