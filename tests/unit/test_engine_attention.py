"""``model.attn_implementation``: auto picks flash-attention 2 where it can run, else sdpa.

The import check and the GPUs' compute capabilities are monkeypatched: what is decided, not
what this machine has, is under test (one test checks the real import check too).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen_server.engine import placement
from qwen_server.engine.lifecycle import Engine
from qwen_server.errors import ConfigError

from .engine_fixtures import tiny_settings


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Set what the machine looks like: GPU capabilities and whether flash_attn imports."""

    def configure(capabilities: list[tuple[int, int]], flash_attn: bool) -> None:
        monkeypatch.setattr(placement, "gpu_capabilities", lambda: capabilities)
        error = None if flash_attn else "ModuleNotFoundError: No module named 'flash_attn'"
        monkeypatch.setattr(placement, "flash_attn_import_error", lambda: error)

    return configure


def _auto(device: str, dtype: torch.dtype) -> str:
    return placement.resolve_attention("auto", device=device, dtype=dtype)


def test_auto_takes_flash_attention_where_it_can_run(gpus) -> None:
    gpus([(9, 0)], flash_attn=True)  # an H200
    assert _auto("cuda", torch.bfloat16) == "flash_attention_2"
    assert _auto("cuda", torch.float16) == "flash_attention_2"
    gpus([(8, 0), (8, 6)], flash_attn=True)
    assert _auto("cuda", torch.bfloat16) == "flash_attention_2"


def test_auto_falls_back_to_sdpa(gpus) -> None:
    gpus([(9, 0)], flash_attn=False)
    assert _auto("cuda", torch.bfloat16) == "sdpa"  # not installed
    gpus([(9, 0)], flash_attn=True)
    assert _auto("cuda", torch.float32) == "sdpa"  # no fp32 kernels
    assert _auto("cpu", torch.float32) == "sdpa"
    gpus([(9, 0), (7, 5)], flash_attn=True)
    assert _auto("cuda", torch.float16) == "sdpa"  # a Turing GPU among them


def test_auto_on_the_cpu_never_imports_flash_attn(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> str | None:
        raise AssertionError("imported flash_attn for a CPU model")

    monkeypatch.setattr(placement, "flash_attn_import_error", refuse)
    assert _auto("cpu", torch.float32) == "sdpa"


def test_an_explicit_choice_is_honoured(gpus) -> None:
    gpus([(9, 0)], flash_attn=True)
    for name in ("sdpa", "eager", "flash_attention_2"):
        assert placement.resolve_attention(name, device="cuda", dtype=torch.bfloat16) == name
    gpus([], flash_attn=False)
    for name in ("sdpa", "eager"):
        assert placement.resolve_attention(name, device="cpu", dtype=torch.float32) == name


@pytest.mark.parametrize(
    ("capabilities", "flash_attn", "device", "dtype", "reason"),
    [
        ([(9, 0)], False, "cuda", torch.bfloat16, "flash-attn package is not installed"),
        ([(9, 0)], True, "cpu", torch.float32, "CUDA GPUs only"),
        ([(9, 0)], True, "cuda", torch.float32, "float16/bfloat16 only"),
        ([(7, 5)], True, "cuda", torch.float16, "compute capability 8.0+"),
    ],
)
def test_flash_attention_where_it_cannot_run_is_a_clear_config_error(
    gpus, capabilities, flash_attn, device, dtype, reason
) -> None:
    gpus(capabilities, flash_attn)
    with pytest.raises(ConfigError) as err:
        placement.resolve_attention("flash_attention_2", device=device, dtype=dtype)
    assert "model.attn_implementation" in err.value.message
    assert "QWEN_MODEL__ATTN_IMPLEMENTATION" in err.value.message
    assert reason in err.value.message


def test_the_real_import_check_reports_why() -> None:
    error = placement.flash_attn_import_error()
    try:
        import flash_attn  # noqa: F401
    except Exception:
        assert error is not None and "Error" in error
    else:
        assert error is None


def test_start_up_plans_sdpa_on_the_cpu_and_refuses_flash_attention(tiny_model_dir: Path) -> None:
    from qwen_server.engine import checkpoint

    settings = tiny_settings(tiny_model_dir)
    config = checkpoint.load_config(settings)
    plan = placement.plan_loading(settings, config, checkpoint.model_class_for(config))
    assert plan.attn_implementation == "sdpa"
    engine = Engine(
        tiny_settings(tiny_model_dir, model={"attn_implementation": "flash_attention_2"})
    )
    with pytest.raises(ConfigError, match="flash_attention_2 cannot be used"):
        engine.load()
    assert engine.failed is not None and "attn_implementation" in engine.failed
