"""The checkpoints ``bench_server.py`` measures: the tiny one, or Qwen2-VL-2B's shape with random
bf16 weights, built locally (no download) and saved like a hub checkpoint, optionally cached.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# Qwen2-VL-2B-Instruct's architecture (config.json on the hub), hard-coded: no download.
QWEN2_VL_2B_TEXT = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": [16, 24, 24],
    },
}
QWEN2_VL_2B_VISION = {
    "depth": 32,
    "embed_dim": 1280,
    "num_heads": 16,
    "mlp_ratio": 4,
    "hidden_size": 1536,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "in_channels": 3,
    "hidden_act": "quick_gelu",
}


def _load_tiny_builder() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_tiny_model", REPO_ROOT / "scripts" / "make_tiny_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_random_model(
    out_dir: Path,
    *,
    text: dict[str, Any],
    vision: dict[str, Any],
    device: str,
    dtype: Any,
    tie_word_embeddings: bool,
) -> Path:
    """A Qwen2-VL of the given dimensions with random weights and the tiny tokenizer, saved
    like a hub checkpoint (so it loads through the normal ``from_pretrained`` path)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tiny = _load_tiny_builder().build_tiny_model(out_dir)
    with open(tiny / "config.json") as fh:
        tiny_cfg = json.load(fh)
    ids = {k: tiny_cfg[k] for k in tiny_cfg if k.endswith("_token_id")}
    tiny_text = tiny_cfg["text_config"]
    config = Qwen2VLConfig(
        text_config={
            **text,
            "bos_token_id": tiny_text["bos_token_id"],
            "eos_token_id": tiny_text["eos_token_id"],
            "pad_token_id": tiny_text["pad_token_id"],
        },
        vision_config=dict(vision),
        tie_word_embeddings=tie_word_embeddings,
        **ids,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialise where it will run: seconds on a GPU
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    for old in tiny.glob("model*.safetensors"):
        old.unlink()
    model.save_pretrained(tiny)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return tiny


def build_random_2b(out_dir: Path) -> Path:
    """Qwen2-VL-2B architecture, random bf16 weights built on the GPU, tiny tokenizer."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--arch qwen2-vl-2b --random-weights needs a CUDA GPU")
    return build_random_model(
        out_dir,
        text=QWEN2_VL_2B_TEXT,
        vision=QWEN2_VL_2B_VISION,
        device="cuda",
        dtype=torch.bfloat16,
        tie_word_embeddings=True,  # as in the 2B checkpoint
    )


def _build_model(args: argparse.Namespace, out_dir: Path) -> Path:
    if args.arch == "qwen2-vl-2b":
        print("building random-weight Qwen2-VL-2B on the GPU ...", flush=True)
        return build_random_2b(out_dir)
    return _load_tiny_builder().build_tiny_model(out_dir)


def model_dir_for(args: argparse.Namespace, tmp: Path) -> Path:
    """The checkpoint to benchmark: ``--model``, the ``--model-cache`` one, or a new one in tmp.

    A cached checkpoint is built in a sibling staging folder and renamed into place, so an
    interrupted build never leaves a half-written checkpoint that a later run would reuse.
    """
    if args.model is not None:
        return args.model
    name = "qwen2-vl-2b-random" if args.arch == "qwen2-vl-2b" else "tiny-qwen2-vl"
    if args.model_cache is None:
        return _build_model(args, tmp / name)
    target = args.model_cache.resolve()
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        print(f"reusing the checkpoint in {target}", flush=True)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        built = _build_model(args, staging / name)
        shutil.rmtree(target, ignore_errors=True)
        built.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
