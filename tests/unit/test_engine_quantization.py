"""``model.quantization``: bitsandbytes int8/nf4 through the real loading path, placement's
estimate, and the start-up error when the package is missing.

The loading tests need bitsandbytes (>= 0.46 has CPU kernels) and are skipped without it.
bitsandbytes' CPU 4-bit kernel needs every quantized linear layer at least 64 inputs wide (its
quantization block) and the tiny model's vision layers are 32 wide, so nf4 loads a variant of
the tiny model with a 64-wide vision tower.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
import torch

from qwen_server.__main__ import main
from qwen_server.config import load_settings
from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.engine import checkpoint, placement
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.quantization import BYTES_PER_WEIGHT, require_package
from qwen_server.errors import ConfigError

from .engine_fixtures import CAPTION_MAX, load_script, make_shot, tiny_settings

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


def _linear_weights(model: torch.nn.Module) -> int:
    head = model.get_output_embeddings()
    return sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    )


def test_placement_estimate_follows_quantization(tiny_model_dir: Path) -> None:
    config = checkpoint.load_config(tiny_settings(tiny_model_dir))
    cls = checkpoint.model_class_for(config)
    sizes = {
        mode: placement.estimate_weight_bytes(cls, config, torch.bfloat16, mode)
        for mode in ("none", "int8", "nf4")
    }
    assert sizes["none"] > sizes["int8"] > sizes["nf4"] > 0
    from accelerate import init_empty_weights

    with init_empty_weights():
        meta = cls._from_config(config)
    linear = _linear_weights(meta)
    # Only the quantized linear weights shrink: 2 bytes -> 1 byte (int8), -> 0.5625 (nf4).
    assert sizes["none"] - sizes["int8"] == pytest.approx(linear * (2 - 1), rel=1e-6)
    assert sizes["none"] - sizes["nf4"] == pytest.approx(
        linear * (2 - BYTES_PER_WEIGHT["nf4"]), rel=1e-6
    )


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_int8_loads_through_the_real_path_and_answers(tiny_model_dir: Path) -> None:
    import bitsandbytes as bnb

    plain = Engine(tiny_settings(tiny_model_dir))
    plain.load()
    engine = Engine(tiny_settings(tiny_model_dir, model={"quantization": "int8"}))
    engine.load()
    model = engine.generator(0).model
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    # The placement estimate is what the loaded model holds (fp32 on the CPU, int8 linears).
    config = checkpoint.load_config(engine.settings)
    estimate = placement.estimate_weight_bytes(
        checkpoint.model_class_for(config), config, torch.float32, "int8"
    )
    footprint = model.get_memory_footprint()
    assert estimate == pytest.approx(footprint, rel=0.01)
    assert footprint < 0.8 * plain.generator(0).model.get_memory_footprint()
    shots = [make_shot(31, 2), make_shot(32, 1, (96, 160)), make_shot(33, 3, (64, 64))]

    async def run() -> list:
        await engine.start()
        try:
            return await engine.analyze(shots)
        finally:
            await engine.stop(timeout=10)

    outputs = asyncio.run(run())
    assert len(outputs) == 3
    for out in outputs:
        assert isinstance(out.caption, str) and 0 < len(out.caption) <= CAPTION_MAX
        assert list(out.scores) == list(ATTRIBUTES)
        assert all(0.0 <= v <= 1.0 for v in out.scores.values())


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_nf4_loads_a_checkpoint_64_wide_and_answers(tmp_path: Path) -> None:
    """nf4 on the CPU: the tiny model with a 64-wide vision tower (bitsandbytes' CPU 4-bit kernel
    quantizes in blocks of 64 inputs), through the real loading path."""
    import bitsandbytes as bnb

    tiny = load_script("make_tiny_model")
    built = load_script("bench_server").build_random_model(
        tmp_path / "tiny-64",
        text={**tiny._TEXT, "vocab_size": 960},
        vision={**tiny._VISION, "embed_dim": 64},
        device="cpu",
        dtype=torch.float32,
        tie_word_embeddings=False,
    )
    engine = Engine(tiny_settings(built, model={"quantization": "nf4"}))
    engine.load()
    model = engine.generator(0).model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    config = checkpoint.load_config(engine.settings)
    estimate = placement.estimate_weight_bytes(
        checkpoint.model_class_for(config), config, torch.float32, "nf4"
    )
    assert estimate == pytest.approx(model.get_memory_footprint(), rel=0.02)
    results = engine.generator(0).generate([engine.prepare(make_shot(41, 2))])
    assert results[0].new_tokens > 0 and results[0].text


def _hide_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None if name == "bitsandbytes" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_missing_package_stops_start_up_naming_setting_and_package(
    mode: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide_bitsandbytes(monkeypatch)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(None, model={"quantization": mode})
    message = excinfo.value.message
    assert "model.quantization" in message and "bitsandbytes" in message and mode in message
    with pytest.raises(ConfigError, match="model.quantization.*bitsandbytes"):
        require_package(mode)
    load_settings(None, model={"quantization": "none"})  # none needs nothing

    monkeypatch.setenv("QWEN_MODEL__QUANTIZATION", mode)
    monkeypatch.setenv("QWEN_SERVER_API_KEYS", "k")
    assert main(["--check-config"]) == 2
    err = capsys.readouterr().err
    assert "QWEN_MODEL__QUANTIZATION" in err and "pip install bitsandbytes" in err
