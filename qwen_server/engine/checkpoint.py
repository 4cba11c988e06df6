"""Checkpoint loading: config, tokenizer, image processor and weights via ``from_pretrained``.

Everything here runs once, at start-up, and turns every way loading can fail (no such local
directory, not in the Hugging Face cache while offline, unsupported checkpoint, CUDA asked for
but absent) into ``ConfigError`` with a message an operator can act on. Where the weights go is
decided in ``placement``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..config import Settings
from ..errors import ConfigError
from .placement import GiB, LoadPlan, free_gpu_bytes
from .quantization import quantization_config

logger = logging.getLogger("qwen_server.model_loading")


def model_display_id(settings: Settings) -> str:
    """Name shown in health/results: the hub id, or only the local directory's name."""
    if settings.model.path is not None:
        return Path(settings.model.path).name or "local-model"
    return settings.model.name


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
    from transformers import AutoTokenizer

    # From its module, not the package root: transformers 5.17's lazy root export of
    # AutoImageProcessor demands torchvision (the module mentions its torchvision backend), while
    # the class itself falls back to the PIL Qwen2-VL processor; later releases do the same.
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

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


def _from_pretrained(model_class: type, settings: Settings, **kwargs: Any) -> Any:
    try:
        model = model_class.from_pretrained(
            settings.model.source, **_pretrained_kwargs(settings), **kwargs
        )
    except ImportError as exc:  # e.g. flash_attention_2 without flash-attn installed
        key = "quantization" if "bitsandbytes" in str(exc) else "attn_implementation"
        raise ConfigError(f"model.{key}: {_short(exc)}") from None
    except (OSError, ValueError) as exc:
        where = "model.path" if settings.model.path is not None else "model.name"
        raise ConfigError(
            f"cannot load the weights of '{model_display_id(settings)}' ({where}): {_short(exc)}"
        ) from None
    model.eval()
    return model


def load_models(settings: Settings, model_class: type, plan: LoadPlan) -> list[Any]:
    """Load one model per replica according to ``plan`` (one entry for shard / cpu).

    With ``plan.quantization`` int8/nf4 the weights are quantized while loading (bitsandbytes,
    see ``quantization``); ``plan.dtype`` stays the dtype of everything else and of nf4's
    compute."""
    common: dict[str, Any] = {"dtype": plan.dtype, "attn_implementation": plan.attn_implementation}
    quant = quantization_config(plan.quantization, plan.dtype)
    if quant is not None:
        # A sharded model may put layers on the CPU: int8 then keeps those in fp32.
        quant.llm_int8_enable_fp32_cpu_offload = plan.placement == "shard"
        common["quantization_config"] = quant
        if settings.model.compile:
            # transformers compiles no bitsandbytes model (HfQuantizer.is_compileable).
            logger.warning(
                "model.compile with model.quantization=%s: the static KV cache is used but "
                "decode steps run uncompiled (transformers does not compile bitsandbytes models)",
                plan.quantization,
            )
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
