"""Placement: where a checkpoint runs on this machine (device, dtype, attention, GPUs).

Placement (``model.placement``):

* ``replicate``: one full copy per GPU, each fed by the batching queue; the fast choice whenever
  the weights plus batch activations fit the smallest GPU.
* ``shard``: one copy spread over all GPUs by accelerate (``device_map="auto"``), for models that
  do not fit one GPU.
* ``auto``: ``replicate`` when ``weights + activation reserve`` fits the free memory of the
  smallest GPU, else ``shard`` (see ``choose_placement``).
* no GPU: one copy on the CPU (placement reported as ``cpu``).

Everything here runs once at start-up, except ``gpu_info`` (read by /health and metrics).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Settings
from ..errors import ConfigError
from .compiled_decode import cache_length_bucket
from .grammar import worst_case_new_tokens
from .quantization import weight_bytes as quantization_weight_bytes

logger = logging.getLogger("qwen_server.model_loading")

GiB = 1024**3

# Text tokens of one prompt (system prompt, instructions, template) - generous for any tokenizer.
_PROMPT_TEXT_TOKENS = 700
# CUDA context, allocator fragmentation, cuBLAS workspaces: kept free on every GPU.
_FIXED_RESERVE_BYTES = 2 * GiB


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``."""
    has_cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if requested == "cuda" and not has_cuda:
        raise ConfigError(
            "model.device: 'cuda' was requested but no CUDA GPU is visible "
            "(check the driver, CUDA_VISIBLE_DEVICES, and that torch is a CUDA build)"
        )
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    return requested


def resolve_dtype(requested: str, device: str) -> torch.dtype:
    """``auto``: bf16 where every GPU supports it, fp16 on older GPUs, fp32 on the CPU."""
    if requested != "auto":
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            requested
        ]
    if device != "cuda":
        return torch.float32
    bf16 = all(
        torch.cuda.get_device_capability(i)[0] >= 8 for i in range(torch.cuda.device_count())
    )
    return torch.bfloat16 if bf16 else torch.float16


_HALF_DTYPES = (torch.float16, torch.bfloat16)  # all flash-attention 2 computes in


def flash_attn_import_error() -> str | None:
    """None when the ``flash_attn`` package imports here, else why it does not.

    A real import rather than a look for the package's files: a wheel built for another torch
    or CUDA is installed but fails to import (undefined symbols), and must count as absent.
    """
    try:
        importlib.import_module("flash_attn")
    except Exception as exc:  # ImportError, or OSError / RuntimeError from a mismatched build
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    return None


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability of every visible GPU."""
    return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def _flash_attention_obstacle(device: str, dtype: torch.dtype) -> str | None:
    """Why flash-attention 2 cannot run here, or None when it can."""
    if device != "cuda":
        return f"it runs on CUDA GPUs only (model.device resolved to {device})"
    if dtype not in _HALF_DTYPES:
        return f"it computes in float16/bfloat16 only (model.dtype resolved to {dtype})"
    capabilities = gpu_capabilities()
    if not capabilities or min(capabilities) < (8, 0):
        return f"it needs Ampere or newer GPUs (compute capability 8.0+), found {capabilities}"
    error = flash_attn_import_error()
    if error is not None:
        return (
            "the flash-attn package is not installed or does not import "
            f"({error}); install it (pip install flash-attn --no-build-isolation)"
        )
    return None


def resolve_attention(requested: str, *, device: str, dtype: torch.dtype) -> str:
    """The attention kernel: ``auto`` picks flash-attention 2 where it can run, else ``sdpa``.

    flash-attention 2 can run on CUDA with fp16/bf16 weights on Ampere or newer GPUs when the
    ``flash_attn`` package imports; there it is preferred (varlen kernels skip the padding
    that left-padded batches carry). Elsewhere ``sdpa``: PyTorch's fused attention, no extra
    dependency. An explicit choice is honoured; ``flash_attention_2`` where it cannot run is a
    ConfigError at start-up saying why, not a failure at the first request.
    """
    if requested == "auto":
        return "flash_attention_2" if _flash_attention_obstacle(device, dtype) is None else "sdpa"
    if requested == "flash_attention_2":
        obstacle = _flash_attention_obstacle(device, dtype)
        if obstacle is not None:
            raise ConfigError(
                f"model.attn_implementation (env QWEN_MODEL__ATTN_IMPLEMENTATION): "
                f"flash_attention_2 cannot be used: {obstacle}; or set it to auto or sdpa"
            )
    return requested


def estimate_weight_bytes(
    model_class: type, config: Any, dtype: torch.dtype, quantization: str = "none"
) -> int:
    """Bytes of the weights in ``dtype``, counted on a meta-device model (no memory used);
    with ``quantization`` int8/nf4 its linear layers count ~1 / ~0.56 byte a weight."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = model_class._from_config(config) if hasattr(model_class, "_from_config") else None
        if model is None:  # Auto classes
            model = model_class.from_config(config)
    return quantization_weight_bytes(model, dtype, quantization)


def activation_reserve_bytes(config: Any, settings: Settings, dtype: torch.dtype) -> int:
    """Memory a full batch needs beyond the weights, estimated generously.

    Per shot: the KV cache of every prompt and generated token, the transient activations of one
    decoder layer over the prompt, and those of one vision block over all patches, for the
    largest allowed shot (``server.max_images_per_shot`` frames at ``model.max_pixels``); times
    ``batching.max_batch_size`` (``planned_batch_size`` for "auto"); plus a fixed reserve for
    the CUDA context and fragmentation.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vision = getattr(config, "vision_config", None)
    itemsize = torch.empty((), dtype=dtype).element_size()
    hidden = int(getattr(text, "hidden_size", 4096))
    layers = int(getattr(text, "num_hidden_layers", 32))
    heads = int(getattr(text, "num_attention_heads", 32))
    kv_heads = int(getattr(text, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    intermediate = int(getattr(text, "intermediate_size", 4 * hidden))

    frames = settings.server.max_images_per_shot
    patches = frames * settings.model.max_pixels // (14 * 14)
    visual_tokens = patches // 4
    if settings.model.frames_as == "video":
        visual_tokens = -(-frames // 2) * (settings.model.max_pixels // (28 * 28))
    # The server vocabulary's lines in the prompt (~3 characters a token) and its answer's
    # worst case. Larger per-request vocabularies are not foreseen here: a batch that then runs
    # out of memory is split in halves (generation.py).
    vocab = settings.analysis.vocabulary
    listed = sum(len(a.name) + len(a.description) + 4 for a in vocab.attributes) // 3
    answer = worst_case_new_tokens(settings.model.caption_max_chars, vocab.names)
    tokens = (
        visual_tokens + _PROMPT_TEXT_TOKENS + listed + max(settings.model.max_new_tokens, answer)
    )

    kv_per_token = 2 * layers * kv_heads * head_dim * itemsize
    prefill_per_token = (4 * hidden + 3 * intermediate) * itemsize
    embed = int(getattr(vision, "embed_dim", 1280)) if vision is not None else 1280
    vision_per_patch = embed * 14 * itemsize
    # model.compile: the static KV cache is allocated for the next length on its ladder.
    cached = cache_length_bucket(tokens) if settings.model.compile else tokens
    per_shot = cached * kv_per_token + tokens * prefill_per_token + patches * vision_per_patch
    return settings.batching.planned_batch_size * per_shot + _FIXED_RESERVE_BYTES


def choose_placement(
    requested: str, *, device: str, weight_bytes: int, reserve_bytes: int, free_bytes: list[int]
) -> str:
    """Decide ``replicate`` / ``shard`` / ``cpu``.

    ``auto`` replicates when weights plus the activation reserve fit the free memory of the
    smallest GPU (every copy must fit its GPU), and shards otherwise. With one GPU, sharding
    means accelerate may offload layers to the CPU: slow, but it runs.
    """
    if device != "cuda" or not free_bytes:
        return "cpu"
    if requested in ("replicate", "shard"):
        return requested
    return "replicate" if weight_bytes + reserve_bytes <= min(free_bytes) else "shard"


def free_gpu_bytes() -> list[int]:
    """Free memory of every visible GPU, in bytes."""
    return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]


@dataclass
class LoadPlan:
    """What ``load_models`` will do; logged at start-up."""

    device: str
    placement: str
    dtype: torch.dtype
    attn_implementation: str
    weight_bytes: int
    reserve_bytes: int
    gpus: list[int]
    quantization: str = "none"  # model.quantization: none | int8 | nf4


def plan_loading(settings: Settings, config: Any, model_class: type) -> LoadPlan:
    """Resolve device, dtype, attention and placement for this machine."""
    device = resolve_device(settings.model.device)
    dtype = resolve_dtype(settings.model.dtype, device)
    attn = resolve_attention(settings.model.attn_implementation, device=device, dtype=dtype)
    quantization = settings.model.quantization
    weight_bytes = estimate_weight_bytes(model_class, config, dtype, quantization)
    reserve = activation_reserve_bytes(config, settings, dtype)
    free = free_gpu_bytes() if device == "cuda" else []
    placement = choose_placement(
        settings.model.placement,
        device=device,
        weight_bytes=weight_bytes,
        reserve_bytes=reserve,
        free_bytes=free,
    )
    gpus = list(range(len(free)))
    if placement == "replicate" and free and weight_bytes + reserve > min(free):
        logger.warning(
            "placement=replicate but weights (%.1f GiB) + activation reserve (%.1f GiB) exceed "
            "the smallest GPU's free memory (%.1f GiB); large batches may run out of memory",
            weight_bytes / GiB,
            reserve / GiB,
            min(free) / GiB,
        )
    return LoadPlan(device, placement, dtype, attn, weight_bytes, reserve, gpus, quantization)


def gpu_info(device: str) -> list[dict[str, Any]]:
    """Per visible GPU: index, name, memory used/total (MB), utilisation % (None if n/a)."""
    if device != "cuda" or not torch.cuda.is_available():
        return []
    info = []
    for i in range(torch.cuda.device_count()):
        entry: dict[str, Any] = {
            "index": i,
            "name": None,
            "memory_used_mb": None,
            "memory_total_mb": None,
            "utilization_pct": None,
        }
        try:
            entry["name"] = torch.cuda.get_device_name(i)
            free, total = torch.cuda.mem_get_info(i)
            entry["memory_used_mb"] = round((total - free) / 2**20, 1)
            entry["memory_total_mb"] = round(total / 2**20, 1)
        except Exception:  # a broken device must not break /health
            pass
        with contextlib.suppress(Exception):  # needs pynvml; optional
            entry["utilization_pct"] = float(torch.cuda.utilization(i))
        info.append(entry)
    return info
