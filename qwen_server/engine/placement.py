"""Loading a Qwen2-VL / Qwen2.5-VL checkpoint and deciding where it runs.

Everything here runs once, at start-up, and turns every way loading can fail (no such local
directory, not in the Hugging Face cache while offline, unsupported checkpoint, CUDA asked for
but absent) into ``ConfigError`` with a message an operator can act on.

Placement (``model.placement``):

* ``replicate``: one full copy per GPU, each fed by the batching queue; the fast choice whenever
  the weights plus batch activations fit the smallest GPU.
* ``shard``: one copy spread over all GPUs by accelerate (``device_map="auto"``), for models that
  do not fit one GPU.
* ``auto``: ``replicate`` when ``weights + activation reserve`` fits the free memory of the
  smallest GPU, else ``shard`` (see ``choose_placement``).
* no GPU: one copy on the CPU (placement reported as ``cpu``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Settings
from .errors import ConfigError

logger = logging.getLogger("qwen_server.model_loading")

GiB = 1024**3

# Text tokens of one prompt (system prompt, instructions, template) - generous for any tokenizer.
_PROMPT_TEXT_TOKENS = 700
# CUDA context, allocator fragmentation, cuBLAS workspaces: kept free on every GPU.
_FIXED_RESERVE_BYTES = 2 * GiB


def model_display_id(settings: Settings) -> str:
    """Name shown in health/results: the hub id, or only the local directory's name."""
    if settings.model.path is not None:
        return Path(settings.model.path).name or "local-model"
    return settings.model.name


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


def resolve_attention(requested: str) -> str:
    """``auto`` -> ``sdpa`` (PyTorch's fused attention: no extra dependency, fast on GPU)."""
    return "sdpa" if requested == "auto" else requested


def _hub_hint(settings: Settings) -> str:
    return (
        "download it on a machine with internet access (e.g. `huggingface-cli download "
        f"{settings.model.name}`) and copy the Hugging Face cache, or set model.path "
        "(QWEN_MODEL__PATH) to a local checkpoint directory"
    )


def _short(exc: BaseException) -> str:
    """First line of an exception message, bounded: enough to diagnose, never a traceback."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:300]


def check_source(settings: Settings) -> None:
    """Fail early and clearly when ``model.path`` is set but is not a checkpoint directory."""
    path = settings.model.path
    if path is None:
        return
    if not Path(path).is_dir():
        raise ConfigError(f"model.path: {path} is not a directory")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"model.path: {path} has no config.json; is it a checkpoint directory?")


def _pretrained_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": settings.model.local_files_only}
    if settings.model.revision and settings.model.path is None:
        kwargs["revision"] = settings.model.revision
    return kwargs


def load_config(settings: Settings) -> Any:
    """``AutoConfig`` for the checkpoint; ConfigError when it cannot be found."""
    from transformers import AutoConfig

    check_source(settings)
    source = settings.model.source
    try:
        return AutoConfig.from_pretrained(source, **_pretrained_kwargs(settings))
    except Exception as exc:  # OSError, hub HTTP/offline errors, ValueError for bad configs
        if settings.model.path is not None:
            raise ConfigError(
                f"model.path: cannot read the checkpoint config in {source}: {_short(exc)}"
            ) from None
        raise ConfigError(
            f"cannot load model '{source}': it is not in the local Hugging Face cache and could "
            f"not be fetched from the hub ({_short(exc)}); {_hub_hint(settings)}"
        ) from None


def model_class_for(config: Any) -> type:
    """The generation class for the checkpoint, decided by its config's ``model_type``."""
    import transformers

    model_type = getattr(config, "model_type", "")
    if model_type == "qwen2_vl":
        return transformers.Qwen2VLForConditionalGeneration
    if model_type == "qwen2_5_vl":
        return transformers.Qwen2_5_VLForConditionalGeneration
    logger.warning(
        "model type %r is not Qwen2-VL or Qwen2.5-VL; trying AutoModelForImageTextToText",
        model_type,
    )
    return transformers.AutoModelForImageTextToText


def load_tokenizer_and_image_processor(settings: Settings) -> tuple[Any, Any]:
    """The tokenizer (with a chat template) and the Qwen2-VL image processor.

    Loaded one by one rather than through ``AutoProcessor``, which also insists on the video
    processor and therefore on torchvision; the engine only needs these two (video input is
    built from the image processor's output, see ``engine``). ``min_pixels``/``max_pixels``
    from the settings bound every frame's resolution.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    source = settings.model.source
    kwargs = _pretrained_kwargs(settings)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        image_processor = AutoImageProcessor.from_pretrained(
            source,
            size={
                "shortest_edge": settings.model.min_pixels,
                "longest_edge": settings.model.max_pixels,
            },
            **kwargs,
        )
    except Exception as exc:
        raise ConfigError(
            f"cannot load the tokenizer or image processor of '{model_display_id(settings)}': "
            f"{_short(exc)}; check model.path / model.name"
        ) from None
    for attr in ("patch_size", "merge_size", "temporal_patch_size"):
        if not isinstance(getattr(image_processor, attr, None), int):
            raise ConfigError(
                f"'{model_display_id(settings)}' has no Qwen2-VL style image processor "
                f"({type(image_processor).__name__} lacks {attr}); only Qwen2-VL and Qwen2.5-VL "
                "checkpoints are supported"
            )
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _chat_template_from_files(settings)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, image_processor


def _chat_template_from_files(settings: Settings) -> str:
    """Older checkpoints keep the template only in chat_template.json (the processor's file)."""
    from huggingface_hub import hf_hub_download

    for name in ("chat_template.jinja", "chat_template.json"):
        try:
            if settings.model.path is not None:
                file = Path(settings.model.path) / name
                if not file.is_file():
                    continue
            else:
                file = Path(
                    hf_hub_download(settings.model.name, name, **_pretrained_kwargs(settings))
                )
            text = file.read_text(encoding="utf-8")
        except Exception:
            continue
        return json.loads(text)["chat_template"] if name.endswith(".json") else text
    raise ConfigError(f"'{model_display_id(settings)}' has no chat template")


# --- placement -------------------------------------------------------------------------------


def estimate_weight_bytes(model_class: type, config: Any, dtype: torch.dtype) -> int:
    """Bytes of the weights in ``dtype``, counted on a meta-device model (no memory used)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = model_class._from_config(config) if hasattr(model_class, "_from_config") else None
        if model is None:  # Auto classes
            model = model_class.from_config(config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in model.parameters()) * itemsize


def activation_reserve_bytes(config: Any, settings: Settings, dtype: torch.dtype) -> int:
    """Memory a full batch needs beyond the weights, estimated generously.

    Per shot: the KV cache of every prompt and generated token, the transient activations of one
    decoder layer over the prompt, and those of one vision block over all patches, for the
    largest allowed shot (``server.max_images_per_shot`` frames at ``model.max_pixels``); times
    ``batching.max_batch_size``; plus a fixed reserve for the CUDA context and fragmentation.
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
    tokens = visual_tokens + _PROMPT_TEXT_TOKENS + settings.model.max_new_tokens

    kv_per_token = 2 * layers * kv_heads * head_dim * itemsize
    prefill_per_token = (4 * hidden + 3 * intermediate) * itemsize
    embed = int(getattr(vision, "embed_dim", 1280)) if vision is not None else 1280
    vision_per_patch = embed * 14 * itemsize
    per_shot = tokens * (kv_per_token + prefill_per_token) + patches * vision_per_patch
    return settings.batching.max_batch_size * per_shot + _FIXED_RESERVE_BYTES


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


def plan_loading(settings: Settings, config: Any, model_class: type) -> LoadPlan:
    """Resolve device, dtype, attention and placement for this machine."""
    device = resolve_device(settings.model.device)
    dtype = resolve_dtype(settings.model.dtype, device)
    attn = resolve_attention(settings.model.attn_implementation)
    weight_bytes = estimate_weight_bytes(model_class, config, dtype)
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
    return LoadPlan(device, placement, dtype, attn, weight_bytes, reserve, gpus)


def _from_pretrained(model_class: type, settings: Settings, **kwargs: Any) -> Any:
    try:
        model = model_class.from_pretrained(
            settings.model.source, **_pretrained_kwargs(settings), **kwargs
        )
    except ImportError as exc:  # e.g. flash_attention_2 without flash-attn installed
        raise ConfigError(f"model.attn_implementation: {_short(exc)}") from None
    except (OSError, ValueError) as exc:
        where = "model.path" if settings.model.path is not None else "model.name"
        raise ConfigError(
            f"cannot load the weights of '{model_display_id(settings)}' ({where}): {_short(exc)}"
        ) from None
    model.eval()
    return model


def load_models(settings: Settings, model_class: type, plan: LoadPlan) -> list[Any]:
    """Load one model per replica according to ``plan`` (one entry for shard / cpu)."""
    common = {"dtype": plan.dtype, "attn_implementation": plan.attn_implementation}
    if plan.placement == "cpu":
        return [_from_pretrained(model_class, settings, **common)]
    if plan.placement == "shard":
        free = free_gpu_bytes()
        share = plan.reserve_bytes // max(1, len(free))
        # Leave every GPU its share of the activation reserve; never less than 30% usable.
        max_memory: dict[Any, int] = {i: max(int(f * 0.3), f - share) for i, f in enumerate(free)}
        max_memory["cpu"] = 512 * GiB  # offload rather than fail when GPUs are too small
        return [
            _from_pretrained(
                model_class, settings, device_map="auto", max_memory=max_memory, **common
            )
        ]
    models = []
    for gpu in plan.gpus:
        models.append(
            _from_pretrained(model_class, settings, device_map={"": f"cuda:{gpu}"}, **common)
        )
    return models


def input_device(model: Any) -> torch.device:
    """Where a model's inputs go: the device of its input embeddings (first shard)."""
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device
