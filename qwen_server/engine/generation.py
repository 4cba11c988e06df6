"""Batched generation on one model replica: collate, one constrained ``generate``, OOM split.

A batch that runs out of memory lowers the engine-wide ``BatchCap``, has its memory freed (its
exception and frames dropped first) and is retried in halves; errors that leave the GPU unusable
(``faults.is_fatal``) propagate so the engine retires the replica.
"""

from __future__ import annotations

import copy
import gc
import logging
from dataclasses import dataclass
from typing import Any

import torch

from .batch_cap import BatchCap
from .checkpoint import input_device
from .compiled_decode import cache_length_bucket, enable_static_decode
from .faults import describe_error, detached, is_fatal, is_oom
from .grammar_processor import GrammarLogitsProcessor
from .grammar_workspace import GrammarWorkspace
from .staging import PixelStaging
from .tokenizer_lock import SerialTokenizer
from .types import PreparedShot, RawResult

logger = logging.getLogger("qwen_server.engine")


class BatchGenerator:
    """Collates prepared shots and runs one constrained ``generate`` on one model copy.

    Not thread-safe by design: each replica's generator is used by that replica's thread only.
    """

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any,
        pad_token_id: int,
        stop_token_ids: list[int],
        exact_length: bool,
        temperature: float,
        image_token_id: int,
        video_token_id: int,
        batch_cap: BatchCap | None = None,
        compile_decode: bool = False,
        grammar_threads: int = 0,
        grammar_overlap: bool = True,
    ) -> None:
        """``batch_cap`` is shared by every replica of the engine (a private one without a
        limit to speak of when None)."""
        from transformers import GenerationConfig

        self.model = model
        self.batch_cap = batch_cap if batch_cap is not None else BatchCap(1 << 20)
        self.device = input_device(model)
        # Matchers, bitmask and mask-filling threads kept across calls (grammar_workspace);
        # overlap: the next step's grammar work runs beside the forward pass.
        self.grammar_workspace = GrammarWorkspace(
            threads=grammar_threads, pin_memory=self.device.type == "cuda"
        )
        self.grammar_overlap = grammar_overlap
        # Decoding shares the tokenizer's lock with the preparation threads (tokenizer_lock.py).
        self.tokenizer = SerialTokenizer(tokenizer)
        self.staging = PixelStaging(self.device)  # pinned for CUDA, reused by every batch
        # Benchmarks: every answer exactly its token budget (min_new_tokens = max_new_tokens).
        self.exact_length = exact_length
        self.pad_token_id = pad_token_id
        self.stop_token_ids = list(stop_token_ids)
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.vocab_limit = len(tokenizer)  # ids past the tokenizer (padded rows) decode to nothing
        self.accepts_seconds = getattr(model.config, "model_type", "") == "qwen2_5_vl"
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        # Only our generation settings count: the checkpoint's sampling defaults (Qwen2-VL
        # ships do_sample, top_k=1, top_p=0.001) would otherwise fill every unset field.
        model.generation_config = GenerationConfig(
            eos_token_id=self.stop_token_ids, pad_token_id=pad_token_id
        )
        # The template of every call; max/min_new_tokens are set per batch from its shots.
        self.generation_config = GenerationConfig(
            max_new_tokens=16,
            eos_token_id=self.stop_token_ids,
            pad_token_id=pad_token_id,
            repetition_penalty=1.0,
            num_beams=1,
            use_cache=True,
            **sampling,
        )
        # model.compile: static KV cache + compiled decode steps (compiled_decode.py).
        self.compile_decode = compile_decode
        if compile_decode:
            enable_static_decode(self.generation_config, self.device)

    def close(self) -> None:
        """Stop the grammar workspace's worker thread (engine stopped or replica retired).

        Called on the replica's own executor thread after its last batch (``Engine.stop``), so
        no ``generate`` can be using the workspace then."""
        self.grammar_workspace.close()

    def collate(self, shots: list[PreparedShot]) -> dict[str, torch.Tensor]:
        """Left-padded token ids, masks and the concatenated pixels of the whole batch, on the
        model's input device (the pixels through the replica's staging buffer, one copy)."""
        longest = max(len(s.input_ids) for s in shots)
        input_ids = torch.full((len(shots), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(shots), longest), dtype=torch.long)
        for row, shot in enumerate(shots):
            n = len(shot.input_ids)
            input_ids[row, longest - n :] = torch.tensor(shot.input_ids, dtype=torch.long)
            attention_mask[row, longest - n :] = 1
        # 0 text, 1 image, 2 video: what the processor returns and M-RoPE needs.
        mm_types = (input_ids == self.image_token_id).long() + 2 * (
            input_ids == self.video_token_id
        ).long()
        mm_types = mm_types * attention_mask
        batch: dict[str, torch.Tensor] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_types,
        }
        images = [s for s in shots if s.kind == "image"]
        videos = [s for s in shots if s.kind == "video"]
        if images:
            batch["image_grid_thw"] = torch.cat([s.grid_thw for s in images])
        if videos:
            batch["video_grid_thw"] = torch.cat([s.grid_thw for s in videos])
            if self.accepts_seconds:
                batch["second_per_grid_ts"] = torch.tensor(
                    [s.seconds_per_grid for s in videos], dtype=torch.float32
                )
        non_blocking = self.device.type == "cuda"
        on_device = {k: v.to(self.device, non_blocking=non_blocking) for k, v in batch.items()}
        on_device.update(self._pixels_on_device(images, videos))
        return on_device

    def _pixels_on_device(
        self, images: list[PreparedShot], videos: list[PreparedShot]
    ) -> dict[str, torch.Tensor]:
        """Both kinds' pixels in one staging fill and one host-to-device copy."""
        keys = [
            k for k, group in (("pixel_values", images), ("pixel_values_videos", videos)) if group
        ]
        groups = [[s.pixel_values for s in group] for group in (images, videos) if group]
        return dict(zip(keys, self.staging.to_device(groups), strict=True)) if groups else {}

    def generate(
        self, shots: list[PreparedShot], *, exact_length: bool | None = None
    ) -> list[RawResult]:
        """One ``generate`` call for the whole batch; results in input order.

        ``exact_length`` (default: the generator's setting) makes every answer take its whole
        token budget: benchmarks and the start-up memory probe (unconstrained shots only)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        inputs = self.collate(shots)
        prompt_length = inputs["input_ids"].shape[1]
        processors = LogitsProcessorList()
        criteria = StoppingCriteriaList()
        grammar: GrammarLogitsProcessor | None = None
        grammars = [s.grammar for s in shots if s.grammar is not None]
        if len(grammars) == len(shots):
            # One grammar per row: a batch may mix vocabularies (each shot its own answer).
            grammar = GrammarLogitsProcessor(
                grammars, workspace=self.grammar_workspace, overlap=self.grammar_overlap
            )
            processors.append(grammar)
            hook = grammar.step_hook()
            if hook is not None:
                criteria.append(hook)
        elif grammars:
            raise ValueError("a batch mixes constrained and unconstrained shots")
        config = copy.copy(self.generation_config)
        config.max_new_tokens = max(1, max(s.max_new_tokens for s in shots))
        exact = self.exact_length if exact_length is None else exact_length
        config.min_new_tokens = config.max_new_tokens if exact else None
        if self.compile_decode:  # a few cache sizes, not one per prompt length
            config.max_cache_len = cache_length_bucket(prompt_length + config.max_new_tokens)
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    generation_config=config,
                    logits_processor=processors,
                    stopping_criteria=criteria,
                )
        finally:
            if grammar is not None:
                grammar.close()  # waits for a step still running; matchers back to the pool
        new = out[:, prompt_length:].tolist()
        results = []
        stops = set(self.stop_token_ids)
        for row in new:
            ids: list[int] = []
            for tok in row:
                if tok in stops:
                    break
                ids.append(tok)
            text = self.tokenizer.decode(
                [t for t in ids if 0 <= t < self.vocab_limit], skip_special_tokens=True
            )
            results.append(RawResult(text=text, new_tokens=len(ids)))
        return results

    def run(self, shots: list[PreparedShot]) -> list[RawResult | BaseException]:
        """``generate`` with failure isolation, at most ``batch_cap.value`` shots at a time.

        Returns one entry per shot: its result, or a traceback-free copy of the exception that
        failed it (``faults.detached``: it holds none of the batch's tensors). An out-of-memory
        batch lowers the engine-wide cap, frees what the failed attempt allocated, and is then
        retried in halves. Fatal errors (see ``is_fatal``) propagate: the caller retires the
        replica.
        """
        cap = self.batch_cap.value
        if len(shots) > cap:  # taken before another replica lowered the cap
            results: list[RawResult | BaseException] = []
            for start in range(0, len(shots), cap):
                results += self._run_isolated(shots[start : start + cap])
            return results
        return self._run_isolated(shots)

    def _run_isolated(self, shots: list[PreparedShot]) -> list[RawResult | BaseException]:
        outcome = self._attempt(shots)
        if not isinstance(outcome, _Failure):
            self.batch_cap.succeeded(len(shots))
            return outcome
        # Outside the ``except`` block: nothing refers to the failed attempt's frames any more.
        if outcome.oom:
            self._free_memory()
            self.batch_cap.out_of_memory(len(shots))
            if len(shots) > 1:
                logger.warning(
                    "out of memory on a batch of %d shots (%s); retrying in halves",
                    len(shots),
                    describe_error(outcome.error),
                )
                half = len(shots) // 2
                return self._run_isolated(shots[:half]) + self._run_isolated(shots[half:])
            logger.error("out of memory on a single shot: %s", describe_error(outcome.error))
        return [outcome.error] * len(shots)

    def _attempt(self, shots: list[PreparedShot]) -> list[RawResult] | _Failure:
        """One ``generate``; a non-fatal error comes back as a ``_Failure`` without frames."""
        try:
            return list(self.generate(shots))
        except BaseException as exc:
            if is_fatal(exc) or not isinstance(exc, Exception):
                raise
            oom = is_oom(exc)
            if not oom:  # OOMs are logged by the caller, once, without the big traceback
                logger.exception("generation failed for a batch of %d shots", len(shots))
            # ``detached`` clears the frames; leaving the block then deletes ``exc`` itself.
            return _Failure(detached(exc), oom)

    def _free_memory(self) -> None:
        """Return what a failed attempt allocated: collect reference cycles (frames, tensors)
        first, then hand the CUDA caching allocator's free blocks back to the driver."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@dataclass
class _Failure:
    """A failed attempt: the traceback-free error to hand back and whether it was an OOM."""

    error: BaseException
    oom: bool
