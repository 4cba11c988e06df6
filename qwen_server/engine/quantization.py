"""Weight quantization at load time (``model.quantization``): none, int8 or nf4.

Both modes go through transformers' ``BitsAndBytesConfig``: bitsandbytes (>= 0.46) has CUDA and
CPU kernels, so the CPU tests load the tiny checkpoint through exactly the code path a GPU uses.

* ``int8``: LLM.int8 (``load_in_8bit``): every linear layer's weight as int8 with one fp32 scale
  per output row, activations outliers in 16 bits. About half the bf16 weight memory; decode is
  usually slower than bf16 (the mixed-precision matmul), it buys memory, not speed.
* ``nf4``: 4-bit NormalFloat (``load_in_4bit``, ``bnb_4bit_quant_type="nf4"``) with one fp32
  absmax per 64 weights, computed in the load dtype (bf16 on Ampere and newer GPUs). About a
  quarter of the bf16 weight memory.

Embeddings, norms, convolutions and the output head (tied to the embeddings in the 2B) stay in
the load dtype, as transformers leaves them; ``weight_bytes`` counts the same way.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from ..config import QUANTIZATION_PACKAGES
from ..errors import ConfigError

logger = logging.getLogger("qwen_server.model_loading")

# Bytes per quantized linear weight: int8 plus its row scale is ~1; nf4 is half a byte plus a
# 4-byte absmax for every 64 weights (no double quantization: the scales are a small share).
_BNB_BLOCK = 64
BYTES_PER_WEIGHT: dict[str, float] = {"int8": 1.0, "nf4": 0.5 + 4 / _BNB_BLOCK}


def require_package(mode: str) -> None:
    """ConfigError naming the setting and the package when ``mode``'s backend is missing.

    The settings check the same at start-up (exit 2); this repeats it for engines built from
    settings constructed without validation."""
    package = QUANTIZATION_PACKAGES.get(mode)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"model.quantization: '{mode}' needs the {package} package, which is not installed "
            f"(pip install {package}), or set model.quantization: none"
        )


def quantization_config(mode: str, compute_dtype: torch.dtype) -> Any | None:
    """The ``quantization_config`` for ``from_pretrained`` (None for ``none``)."""
    if mode == "none":
        return None
    require_package(mode)
    from transformers import BitsAndBytesConfig

    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=False,
        )
    raise ConfigError(f"model.quantization: unknown mode {mode!r}")


def _kept_in_full_precision(model: Any) -> set[str]:
    """Module names transformers does not quantize: the output head and what is tied to it."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        return set(get_keys_to_not_convert(model))
    except Exception:  # older/newer transformers: the output embeddings at least
        head = model.get_output_embeddings()
        return {name for name, module in model.named_modules() if module is head}


def weight_bytes(model: Any, dtype: torch.dtype, mode: str) -> int:
    """Bytes of ``model``'s weights (a meta-device model is fine) once loaded in ``mode``.

    Linear weights that transformers quantizes count ``BYTES_PER_WEIGHT[mode]`` each; every other
    parameter (embeddings, norms, biases, convolutions, the output head) the ``dtype`` size."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    total = sum(p.numel() for p in model.parameters()) * itemsize
    if mode == "none":
        return total
    kept = _kept_in_full_precision(model)
    quantized = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name not in kept:
            quantized += module.weight.numel()
    return int(total - quantized * itemsize + quantized * BYTES_PER_WEIGHT[mode])
