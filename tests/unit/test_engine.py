"""The engine on the real code path: the tiny random-weight Qwen2-VL checkpoint on the CPU.

Identity and order of results are checked through ``counts["prompt_tokens"]``, which is
exact per shot (it depends on frame count and size), rather than through the random model's
text alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from qwen_server.config import Settings
from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.engine import checkpoint, placement
from qwen_server.engine.faults import describe_error, is_fatal, scrub_paths
from qwen_server.engine.grammar import worst_case_new_tokens
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.types import ShotInput
from qwen_server.errors import ConfigError, EngineFailure, NotReady, Overloaded

from .engine_fixtures import CAPTION_MAX, make_shot, tiny_settings


def _expected_tokens(engine: Engine, shots: list[ShotInput]) -> list[float]:
    return [float(len(engine.prepare(s).input_ids)) for s in shots]


def _check_output(out, caption_max: int = CAPTION_MAX) -> None:
    assert isinstance(out.caption, str) and 0 < len(out.caption) <= caption_max
    assert list(out.scores) == list(ATTRIBUTES)
    assert all(0.0 <= v <= 1.0 for v in out.scores.values())
    assert out.counts["batch_size"] >= 1


def test_load_state_and_mixed_batch(tiny_model_dir: Path) -> None:
    """Load; a batch of shots with 1, 3 and 5 frames of different sizes returns results in order."""
    engine = Engine(tiny_settings(tiny_model_dir, model={"frames_as": "images"}))
    assert not engine.ready
    engine.load()
    assert engine.device == "cpu" and engine.placement == "cpu" and engine.replicas == 1
    assert engine.model_id == tiny_model_dir.name and "/" not in engine.model_id
    assert engine.gpu_info() == []
    assert engine.max_new_tokens >= worst_case_new_tokens(CAPTION_MAX, ATTRIBUTES)
    shots = [make_shot(1, 1), make_shot(2, 3, (120, 200)), make_shot(3, 5, (64, 64), audio=None)]

    async def run() -> list:
        with pytest.raises(NotReady):
            await engine.analyze(shots)  # loaded but not started
        await engine.start()
        assert engine.ready
        try:
            return await engine.analyze(shots)
        finally:
            await engine.stop(timeout=10)

    outputs = asyncio.run(run())
    assert len(outputs) == 3
    for out in outputs:
        _check_output(out)
        assert out.counts["batch_size"] == 3
    assert [o.counts["prompt_tokens"] for o in outputs] == _expected_tokens(engine, shots)
    assert engine.shots_served == 3
    assert not engine.ready


def test_batched_equals_one_at_a_time(tiny_model_dir: Path) -> None:
    """Left padding and multimodal positions are right: batching does not change any answer."""
    engine = Engine(tiny_settings(tiny_model_dir))  # frames_as=video, the default
    engine.load()
    shots = [make_shot(11, 5), make_shot(12, 1, (96, 160)), make_shot(13, 2, (200, 100))]
    prepared = [engine.prepare(s) for s in shots]
    generator = engine.generator(0)
    batched = generator.generate(prepared)
    single = [generator.generate([p])[0] for p in prepared]
    assert [r.text for r in batched] == [r.text for r in single]


def test_concurrent_callers_are_merged_and_get_their_own_results(tiny_model_dir: Path) -> None:
    settings = tiny_settings(tiny_model_dir, batching={"max_batch_size": 8, "max_wait_ms": 1500})
    engine = Engine(settings)
    engine.load()
    sizes: list[int] = []
    engine.on_batch = lambda size, seconds: sizes.append(size)
    callers = [[make_shot(100 + 10 * c + i, c + 1) for i in range(2)] for c in range(4)]

    async def run() -> list[list]:
        await engine.start()
        try:
            return await asyncio.gather(*(engine.analyze(shots) for shots in callers))
        finally:
            await engine.stop(timeout=10)

    results = asyncio.run(run())
    assert max(sizes) > 1, sizes
    assert sum(sizes) == 8
    for shots, outs in zip(callers, results, strict=True):
        assert len(outs) == len(shots)
        for out in outs:
            _check_output(out)
        assert [o.counts["prompt_tokens"] for o in outs] == _expected_tokens(engine, shots)


def test_queue_bound_and_stop(tiny_model_dir: Path) -> None:
    """Past server.max_queued_shots: Overloaded with Retry-After; after stop(): NotReady."""
    engine = Engine(
        tiny_settings(tiny_model_dir, server={"max_queued_shots": 3, "max_shots_per_request": 3})
    )
    engine.load()

    async def run() -> None:
        await engine.start()
        with pytest.raises(Overloaded) as excinfo:
            await engine.analyze([make_shot(i, 1) for i in range(4)])
        assert excinfo.value.status_code == 503
        assert int(excinfo.value.headers["Retry-After"]) >= 1
        assert engine.queue_depth == 0  # the refused call reserved nothing

        # An in-flight call finishes during stop(); new calls are refused.
        first = asyncio.create_task(engine.analyze([make_shot(7, 2), make_shot(8, 1)]))
        await asyncio.sleep(0)
        assert engine.queue_depth == 2  # reserved while its frames are prepared
        while engine.queue_depth:  # until a worker has taken the batch: in flight
            await asyncio.sleep(0.005)
        stopping = asyncio.create_task(engine.stop(timeout=30))
        await asyncio.sleep(0)
        with pytest.raises(NotReady):
            await engine.analyze([make_shot(9, 1)])
        outs = await first
        await stopping
        assert len(outs) == 2
        assert not engine.ready
        with pytest.raises(NotReady):
            await engine.analyze([make_shot(10, 1)])

    asyncio.run(run())


@pytest.mark.allow_error_logs
def test_failures_are_isolated_oom_is_split_fatal_marks_failed(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(tiny_settings(tiny_model_dir, batching={"max_wait_ms": 200}))
    engine.load()
    generator = engine.generator(0)
    real_generate = generator.generate
    mode = {"value": "ok"}

    def flaky_generate(shots):
        if mode["value"] == "error":
            raise RuntimeError("something broke in generate")
        if mode["value"] == "oom" and len(shots) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if mode["value"] == "fatal":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_generate(shots)

    monkeypatch.setattr(generator, "generate", flaky_generate)
    sizes: list[int] = []
    engine.on_batch = lambda size, seconds: sizes.append(size)

    async def run() -> None:
        await engine.start()
        try:
            mode["value"] = "error"
            with pytest.raises(EngineFailure):
                await engine.analyze([make_shot(1, 1)])
            assert engine.failed is None and engine.ready

            mode["value"] = "oom"  # the batch of 3 is retried as 1 + 2 -> 1 + 1
            outs = await engine.analyze([make_shot(2, 1), make_shot(3, 2), make_shot(4, 1)])
            assert len(outs) == 3 and all(o.caption for o in outs)

            mode["value"] = "fatal"
            with pytest.raises(EngineFailure):
                await engine.analyze([make_shot(5, 1)])
            assert engine.failed and "CUDA error" in engine.failed
            assert not engine.ready
            with pytest.raises(NotReady):
                await engine.analyze([make_shot(6, 1)])
        finally:
            await engine.stop(timeout=5)

    asyncio.run(run())


def test_error_descriptions_hide_paths() -> None:
    text = describe_error(OSError("cannot open /root/.cache/hf/models--x/config.json (Qwen/Q2)"))
    assert "/root" not in text and "<path>" in text and "Qwen/Q2" in text
    assert scrub_paths("see https://huggingface.co/Qwen") == "see https://huggingface.co/Qwen"


def test_fatal_error_classification() -> None:
    assert is_fatal(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_fatal(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_fatal(ValueError("bad input"))


def test_missing_model_gives_config_error(tmp_path: Path) -> None:
    missing = Engine(Settings(model={"path": str(tmp_path / "nope"), "device": "cpu"}))
    with pytest.raises(ConfigError, match="model.path"):
        missing.load()
    assert missing.failed and not missing.ready
    assert str(tmp_path) not in missing.failed  # /health shows it: no filesystem paths

    offline = Engine(
        Settings(
            model={
                "name": "qwen-server-tests/not-a-real-model",
                "local_files_only": True,
                "device": "cpu",
            }
        )
    )
    with pytest.raises(ConfigError) as excinfo:
        offline.load()
    message = excinfo.value.message
    assert "model.path" in message and "qwen-server-tests/not-a-real-model" in message
    assert "Traceback" not in message and len(message) < 1000


def test_placement_rule() -> None:
    gib = placement.GiB
    choose = placement.choose_placement
    assert choose("auto", device="cpu", weight_bytes=gib, reserve_bytes=gib, free_bytes=[]) == "cpu"
    fits = {"weight_bytes": 5 * gib, "reserve_bytes": 10 * gib}
    assert choose("auto", device="cuda", free_bytes=[80 * gib, 40 * gib], **fits) == "replicate"
    assert choose("auto", device="cuda", free_bytes=[80 * gib, 12 * gib], **fits) == "shard"
    assert choose("shard", device="cuda", free_bytes=[80 * gib], **fits) == "shard"
    assert choose("replicate", device="cuda", free_bytes=[8 * gib], **fits) == "replicate"
    assert placement.resolve_dtype("auto", "cpu") == torch.float32
    assert placement.resolve_attention("auto", device="cpu", dtype=torch.float32) == "sdpa"
    settings = Settings(model={"path": "/some/where/deep/my-model"})
    assert checkpoint.model_display_id(settings) == "my-model"


def test_activation_reserve_grows_with_batch(tiny_model_dir: Path) -> None:
    config = checkpoint.load_config(tiny_settings(tiny_model_dir))
    small = placement.activation_reserve_bytes(
        config, Settings(batching={"max_batch_size": 1}), torch.bfloat16
    )
    big = placement.activation_reserve_bytes(
        config, Settings(batching={"max_batch_size": 64}), torch.bfloat16
    )
    assert placement.GiB < small < big
