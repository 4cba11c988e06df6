#!/usr/bin/env python
"""Write a tiny random-weight Qwen2-VL checkpoint that loads like the real one.

The checkpoint has the same files as ``Qwen/Qwen2-VL-2B-Instruct`` on the hub (config,
generation config, byte-level BPE tokenizer with the Qwen2-VL special tokens, image processor
config, chat template, safetensors weights), so tests and smoke benchmarks exercise exactly the
``AutoProcessor`` + model-class ``from_pretrained`` path the server uses for the real model.

It is tiny (text hidden 64 x 2 layers, vision depth 2) so CPU generation is fast, and it is
deterministic: the tokenizer is trained on fixed inline text and the weights use a fixed seed.

Usage::

    python scripts/make_tiny_model.py --out /tmp/tiny-qwen2-vl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Qwen2-VL's special tokens, in the hub order (their relative order matters for nothing but
# readability; their ids are wired into the config below).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The chat template of Qwen2-VL-*-Instruct (chat_template.json on the hub).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The pre-tokenizer regex of Qwen2's tokenizer (digits are split one by one).
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# A little English about film shots plus the JSON the server asks for, so the BPE learns merges
# that look like the real task.
_TRAINING_TEXT = """
You are a helpful assistant. Describe the shot and rate it.
A man walks slowly down a dark corridor lit by a flickering lamp; the camera follows him.
Two women argue in a bright kitchen while rain hits the window behind them.
A car speeds along a wet highway at night, headlights streaking past the lens.
Close-up of a child's face, eyes wide, as a door creaks open somewhere off screen.
An empty street at dawn, fog rolling between the buildings, no one in sight.
Soldiers run across a field under heavy fire; smoke and explosions fill the frame.
The audio has loud broadband sound with a fast beat, quiet speech, or near silence.
{"caption": "A dark corridor with a single figure walking away from the camera.",
 "suspense": 78, "darkness": 85, "ambiguity": 60, "emotional_tension": 55, "intensity": 40,
 "motion": 20}
Scores are integers from 0 to 100: suspense, darkness, ambiguity, emotional_tension,
intensity, motion. The shot lasts 2.5 seconds and has 5 frames in time order.
0 1 2 3 4 5 6 7 8 9 10 25 50 75 100 the a an of in on at with and or is are was were
You are a film analyst. You watch one shot of a film, describe what is on screen in one plain
sentence, and rate how the shot feels. You answer with JSON only.
A film shot as a clip of 5 frames. Frames of a film shot, in time order: Frame 1: Frame 2:
Shot duration: 2.5 seconds (5 frames shown). Audio: no audio information.
Write a caption: one plain sentence of at most 200 characters saying who or what is on screen,
where, and what happens. Then rate the shot with integers from 0 (not at all) to 100
(extremely), using what you see and the audio:
- suspense: anticipation that something is about to happen; threat or unresolved danger
- darkness: how dark and gloomy image and mood are (low light, night, shadows, bleak tone)
- ambiguity: how unclear it is what is happening or what it means (obscured, odd, mysterious)
- emotional_tension: emotional strain in or between characters (conflict, fear, grief)
- intensity: overall energy and force (violence, action, loud or extreme moments)
- motion: how much moves on screen, camera or subjects (0 = still, 100 = very fast)
Answer with only this JSON object: {"caption": "<sentence>", "suspense": <0-100>}
"""

# Tiny dimensions: text hidden 64 (4 heads of 16, 2 KV heads), 2 layers; vision depth 2.
# Patch, merge and temporal sizes stay those of the real model so image processing is identical.
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    # head_dim 16 -> 8 rotary frequencies split over (temporal, height, width).
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": [2, 3, 3],
    },
}
_VISION = {
    "depth": 2,
    "embed_dim": 32,
    "hidden_size": 64,
    "num_heads": 2,
    "mlp_ratio": 2,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}
# Qwen2.5-VL's vision tower names its sizes differently (and adds window attention).
_VISION_2_5 = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [1],
    "tokens_per_second": 2,
}
ARCHES = ("qwen2-vl", "qwen2.5-vl")
_BPE_VOCAB = 1200  # before the special tokens
_SEED = 1234

# Text and dimensions are what make the checkpoint; change them and every test model changes.


def _train_tokenizer(out_dir: Path) -> dict[str, int]:
    """Train the byte-level BPE, save it as a Qwen2 tokenizer, return special-token ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB,
        # All 256 byte symbols, so any text (and any caption) is encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(_TRAINING_TEXT.splitlines(), trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)

    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
    )
    tok.padding_side = "left"  # irrelevant on disk; the engine sets it explicitly anyway
    tok.save_pretrained(out_dir)
    return {t: vocab[t] for t in SPECIAL_TOKENS} | {"_size": len(vocab)}


def _write_processor_files(out_dir: Path) -> None:
    """Image processor config and chat template, in the hub checkpoint's layout."""
    preprocessor = {
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 1280,
        "patch_size": _VISION["patch_size"],
        "temporal_patch_size": _VISION["temporal_patch_size"],
        "merge_size": _VISION["spatial_merge_size"],
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    (out_dir / "chat_template.json").write_text(
        json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n"
    )


def _write_model(out_dir: Path, ids: dict[str, int], arch: str) -> None:
    """Random weights with a fixed seed, saved as safetensors with config + generation config."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    if arch == "qwen2.5-vl":
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision = dict(_VISION_2_5)
    else:
        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision = dict(_VISION)

    # Pad the model vocabulary above the tokenizer's, to a multiple of 64, like the real model
    # (151936 rows for 151657 tokens): the grammar code must cope with that gap.
    vocab_size = -(-ids["_size"] // 64) * 64 + 64
    eos, pad = ids["<|im_end|>"], ids["<|endoftext|>"]
    config = config_class(
        text_config={
            **_TEXT,
            "vocab_size": vocab_size,
            "bos_token_id": pad,
            "eos_token_id": eos,
            "pad_token_id": pad,
        },
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(_SEED)
    model = model_class(config).to(torch.float32).eval()
    model.save_pretrained(out_dir)
    # Same shape as the hub's generation_config.json (eos: <|im_end|> and <|endoftext|>).
    GenerationConfig(
        bos_token_id=pad,
        pad_token_id=pad,
        eos_token_id=[eos, pad],
        do_sample=True,
        temperature=0.01,
        top_p=0.001,
        top_k=1,
        repetition_penalty=1.0,
    ).save_pretrained(out_dir)


def build_tiny_model(out_dir: Path, arch: str = "qwen2-vl") -> Path:
    """Write the tiny checkpoint into ``out_dir`` (created if needed) and return it.

    Deterministic: the same files (tokenizer, config, weights) on every run. ``arch`` picks
    Qwen2-VL (the default, like the server's default model) or Qwen2.5-VL.
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a tiny file needs no "Writing model shards" bar
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = _train_tokenizer(out_dir)
    _write_processor_files(out_dir)
    _write_model(out_dir, ids, arch)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--arch", choices=ARCHES, default="qwen2-vl")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out, args.arch)
    print(f"tiny {args.arch} checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
