"""Replicas: the checkpoint turned into ready-to-serve model copies, one per GPU (or one sharded).

``load_replicas`` loads config, tokenizer and image processor (``checkpoint``), decides where the
weights go (``placement``), sets up the answer-grammar cache (the server vocabulary's grammar is
compiled by the warm-up), loads one model per replica with its own ``BatchGenerator`` and single
generate thread, and warms every replica up; with ``batching.max_batch_size: auto`` it then
probes the memory one worst-case batch needs and picks the batch size (``memory_probe``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch

from ..config import Settings
from ..contract.vocabulary import Vocabulary
from ..errors import ConfigError
from . import checkpoint, placement
from .batch_cap import BatchCap
from .generation import BatchGenerator
from .grammar import GrammarCache, tokenizer_info
from .inputs import ShotPreparer
from .memory_probe import resolve_batch_size
from .thread_budget import ThreadBudget
from .types import ShotInput

logger = logging.getLogger("qwen_server.engine")


@dataclass
class Replica:
    """One model copy: its generator, the one thread that runs it, its GPU (None: CPU/shard)."""

    index: int
    generator: BatchGenerator
    executor: ThreadPoolExecutor
    gpu: int | None
    dead: str | None = None


def close_replica(replica: Replica) -> None:
    """Retire a replica whose executor is already shut down: wait for the batch still running
    on its thread, then stop its grammar workspace's worker thread (``Engine.stop``)."""
    replica.executor.shutdown(wait=True)
    replica.generator.close()


@dataclass
class LoadedModel:
    """What ``load_replicas`` hands the engine."""

    device: str
    placement: str
    preparer: ShotPreparer
    replicas: list[Replica]
    max_new_tokens: int  # the token budget of an answer in the server's vocabulary
    grammars: GrammarCache | None
    # Engine-wide: its maximum is batching.max_batch_size (the probe's choice for "auto").
    batch_cap: BatchCap


@dataclass
class _TokenIds:
    image: int
    video: int
    stop: list[int]
    pad: int
    vocab_size: int


def stop_token_ids(config: Any, tokenizer: Any) -> list[int]:
    """Tokens that end an answer: the tokenizer's EOS, <|im_end|> and <|endoftext|>."""
    vocab = tokenizer.get_vocab()
    ids: list[int] = []
    if isinstance(tokenizer.eos_token_id, int):
        ids.append(tokenizer.eos_token_id)
    for text in ("<|im_end|>", "<|endoftext|>"):
        if text in vocab and vocab[text] not in ids:
            ids.append(int(vocab[text]))
    if not ids:
        raise ConfigError(f"'{getattr(config, 'model_type', '?')}': tokenizer has no EOS token")
    return ids


def _token_ids(model_id: str, config: Any, tokenizer: Any) -> _TokenIds:
    image_token_id = int(config.image_token_id)
    video_token_id = int(config.video_token_id)
    for text, expected in (
        ("<|image_pad|>", image_token_id),
        ("<|video_pad|>", video_token_id),
    ):
        if tokenizer.convert_tokens_to_ids(text) != expected:
            raise ConfigError(
                f"'{model_id}': tokenizer id of {text} does not match the model config"
            )
    return _TokenIds(
        image=image_token_id,
        video=video_token_id,
        stop=stop_token_ids(config, tokenizer),
        pad=int(tokenizer.pad_token_id),
        vocab_size=int(config.get_text_config().vocab_size),
    )


def load_replicas(
    settings: Settings, model_id: str, *, force_new_tokens: int | None, use_grammar: bool
) -> LoadedModel:
    """Load the checkpoint into serving replicas and warm them up (blocking, minutes)."""
    cfg = settings.model
    config = checkpoint.load_config(settings)
    model_class = checkpoint.model_class_for(config)
    plan = placement.plan_loading(settings, config, model_class)
    logger.info(
        "loading %s: device=%s placement=%s dtype=%s attention=%s weights=%.2f GiB",
        model_id,
        plan.device,
        plan.placement,
        str(plan.dtype).removeprefix("torch."),
        plan.attn_implementation,
        plan.weight_bytes / placement.GiB,
    )
    tokenizer, image_processor = checkpoint.load_tokenizer_and_image_processor(settings)
    ids = _token_ids(model_id, config, tokenizer)
    grammars = None
    if use_grammar and force_new_tokens is None:
        # One cache per tokenizer, shared by every replica and every generate call.
        info = tokenizer_info(tokenizer, vocab_size=ids.vocab_size, stop_token_ids=ids.stop)
        grammars = GrammarCache(info, caption_max_chars=cfg.caption_max_chars)
    models = checkpoint.load_models(settings, model_class, plan)
    preparer = ShotPreparer(
        tokenizer,
        image_processor,
        image_token_id=ids.image,
        video_token_id=ids.video,
        frames_as=cfg.frames_as,
        caption_max_chars=cfg.caption_max_chars,
        max_new_tokens=cfg.max_new_tokens,
        grammars=grammars,
        force_new_tokens=force_new_tokens,
        pixel_dtype=plan.dtype,
    )
    # The maximum is provisional until the probe has run (for "auto"): warm-up batches are 1.
    batch_cap = BatchCap(
        settings.batching.planned_batch_size,
        recovery_batches=settings.batching.cap_recovery_batches,
    )
    budget = ThreadBudget.resolve(settings, device=plan.device, replicas=len(models))
    replicas = []
    for index, model in enumerate(models):
        generator = BatchGenerator(
            model,
            tokenizer=tokenizer,
            pad_token_id=ids.pad,
            stop_token_ids=ids.stop,
            exact_length=force_new_tokens is not None,
            temperature=cfg.temperature,
            image_token_id=ids.image,
            video_token_id=ids.video,
            batch_cap=batch_cap,
            grammar_threads=cfg.grammar_threads,
            grammar_overlap=cfg.grammar_overlap,
            compile_decode=cfg.compile,
        )
        gpu = plan.gpus[index] if plan.placement == "replicate" else None
        executor = budget.generate_executor(index)  # its own intra-op thread budget
        replicas.append(Replica(index, generator, executor, gpu))
    vocabulary = settings.analysis.vocabulary
    warm_up(preparer, replicas, vocabulary)
    batch_cap.set_maximum(resolve_batch_size(settings, plan.device, replicas, preparer))
    max_new = preparer.answer_tokens(vocabulary.names)
    if max_new > cfg.max_new_tokens:
        logger.info(
            "answers may take up to %d tokens (model.max_new_tokens=%d): a %d-character caption "
            "and %d scores always fit (generation stops at the answer's end anyway)",
            max_new,
            cfg.max_new_tokens,
            cfg.caption_max_chars,
            len(vocabulary),
        )
    return LoadedModel(
        plan.device, plan.placement, preparer, replicas, max_new, grammars, batch_cap
    )


def warm_up(preparer: ShotPreparer, replicas: list[Replica], vocabulary: Vocabulary) -> None:
    """Run one tiny shot on every replica: surfaces problems at start-up, warms kernels, and
    compiles the answer grammar of the server's vocabulary."""
    frame = PIL.Image.new("RGB", (56, 56))
    shot = preparer.prepare(
        ShotInput(
            shot_id=0,
            frames=[frame, frame],
            duration=1.0,
            audio_summary=None,
            vocabulary=vocabulary,
        )
    )
    for replica in replicas:
        if replica.gpu is not None:
            torch.cuda.set_device(replica.gpu)
        replica.generator.generate([shot])
