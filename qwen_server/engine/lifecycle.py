"""The model engine: Qwen2-VL loaded on every GPU, fed by one batching queue, JSON-constrained.

Flow of a request::

    admit(n) ─► queue room now, or a place in a first-come-first-served line for up to
    server.admission_wait_s (else Overloaded + Retry-After) ─► the caller decodes frames ─►
    analyze(shots, admission) ─► prepare each shot on a CPU thread
    (image processor, prompt, token ids) ─► queue ─► one worker per model replica takes up to
    batching.max_batch_size shots (waiting batching.max_wait_ms to fill) ─► one generate() call
    on that replica's own thread (left padding, all frames of the batch through the vision
    tower together, xgrammar-constrained) ─► parse ─► each caller gets its own results in order

* A replica never runs two generate() calls at once (one worker, one thread per replica), and
  the event loop never waits on the GPU.
* Shot preparation runs on a thread pool while the GPUs work on earlier batches.
* A failing generate() fails only the callers in that batch (an out-of-memory batch is first
  retried in halves); only errors that leave a GPU unusable retire its replica, and the engine is
  marked ``failed`` when no replica is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch

from . import model_loading
from .batcher import BatchQueue, QueueClosed, QueueFull
from .config import Settings
from .errors import ConfigError, EngineFailure, InvalidInput, NotReady, Overloaded
from .prompts import build_messages, render_prompt
from .schemas import ATTRIBUTES
from .structured import (
    GrammarLogitsProcessor,
    compile_output_grammar,
    parse_model_output,
    worst_case_new_tokens,
)

logger = logging.getLogger("qwen_server.engine")


@dataclass
class ShotInput:
    """One shot to analyse: decoded RGB frames in time order plus what is known about it."""

    shot_id: int
    frames: list[PIL.Image.Image]
    duration: float | None
    audio_summary: str | None


@dataclass
class ModelOutput:
    """The model's reading of one shot: caption and the six scores in [0, 1]."""

    caption: str
    scores: dict[str, float]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Sizes of the generate call that produced it: batch_size, new_tokens, prompt_tokens.
    counts: dict[str, int] = field(default_factory=dict)
    # What the answer lacked and was filled with a fallback: "caption" and/or attribute names
    # (``ParsedOutput.missing``); empty when the model's answer was complete.
    fallback: list[str] = field(default_factory=list)


@dataclass
class PreparedShot:
    """A shot turned into model inputs (CPU tensors), ready to be collated into a batch."""

    shot_id: int
    input_ids: list[int]
    # (patches, C * temporal_patch * patch * patch) in the model's dtype; pinned for CUDA
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor  # (n_visuals, 3): one row per image, or one for the clip
    kind: str  # "image" | "video"
    seconds_per_grid: float  # video only: seconds covered by one temporal patch
    prep_ms: float = 0.0


@dataclass
class RawResult:
    """Decoded text of one generated answer and how many tokens it took."""

    text: str
    new_tokens: int


# --- shot preparation (CPU, thread-safe) -----------------------------------------------------


class ShotPreparer:
    """Frames -> pixel patches (Qwen2-VL image processor) and prompt -> token ids.

    With ``frames_as="video"`` the frames become one clip: the image processor resizes and
    normalises each frame as usual, then pairs of consecutive frames are packed into the
    temporal patches the vision tower expects for video (the layout of Qwen2-VL's video
    processor, which itself needs torchvision). An odd last frame is repeated, as there.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        *,
        image_token_id: int,
        video_token_id: int,
        frames_as: str,
        caption_max_chars: int,
        pixel_dtype: torch.dtype = torch.float32,
        pin_memory: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        # Pixels leave preparation in the model's dtype (the vision tower casts to it anyway)
        # and, for a GPU, in pinned memory: half the bytes of float32, copied to the device
        # asynchronously shot by shot, with no big concatenation on the CPU in the GPU's path.
        self.pixel_dtype = pixel_dtype
        self.pin_memory = pin_memory
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.frames_as = frames_as
        self.caption_max_chars = caption_max_chars
        self.patch = int(image_processor.patch_size)
        self.merge = int(image_processor.merge_size)
        self.temporal = int(image_processor.temporal_patch_size)

    def prepare(self, shot: ShotInput) -> PreparedShot:
        """Build the inputs of one shot. Raises InvalidInput for frames it cannot use."""
        t0 = time.perf_counter()
        frames = [f if f.mode == "RGB" else f.convert("RGB") for f in shot.frames]
        if not frames:
            raise InvalidInput(f"shot {shot.shot_id}: no frames")
        try:
            if self.frames_as == "video":
                pixels, grid = self._video_patches(frames)
                kind = "video"
            else:
                out = self.image_processor(images=frames, return_tensors="pt")
                pixels, grid = out["pixel_values"], out["image_grid_thw"]
                kind = "image"
        except ValueError as exc:  # e.g. an aspect ratio the processor refuses (> 200:1)
            raise InvalidInput(f"shot {shot.shot_id}: cannot process its frames: {exc}") from None
        messages = build_messages(
            n_frames=len(frames),
            frames_as=self.frames_as,  # type: ignore[arg-type]
            duration=shot.duration,
            audio_summary=shot.audio_summary,
            caption_max_chars=self.caption_max_chars,
        )
        text = render_prompt(self.tokenizer, messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids = self._expand_placeholders(ids, grid, kind)
        seconds = 1.0  # qwen-vl-utils' default sampling, 2 fps x temporal patch 2
        if kind == "video" and shot.duration and shot.duration > 0:
            seconds = shot.duration / len(frames) * self.temporal
        return PreparedShot(
            shot_id=shot.shot_id,
            input_ids=input_ids,
            pixel_values=self._transferable(pixels),
            grid_thw=grid.to(torch.long),
            kind=kind,
            seconds_per_grid=float(seconds),
            prep_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def _transferable(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.pixel_dtype).contiguous()
        return pixels.pin_memory() if self.pin_memory else pixels

    def _video_patches(self, frames: list[PIL.Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        size = frames[0].size
        frames = [f if f.size == size else f.resize(size, PIL.Image.BICUBIC) for f in frames]
        out = self.image_processor(images=frames, return_tensors="pt")
        grids = out["image_grid_thw"]
        gh, gw = int(grids[0][1]), int(grids[0][2])
        n, tp, p = len(frames), self.temporal, self.patch
        # Per frame: (gh*gw patches, C, temporal copies, p, p); the copies are identical.
        per_frame = out["pixel_values"].reshape(n, gh * gw, -1, tp, p, p)[:, :, :, 0]
        if pad := -n % tp:
            per_frame = torch.cat([per_frame, per_frame[-1:].expand(pad, -1, -1, -1, -1)])
        gt = per_frame.shape[0] // tp
        channels = per_frame.shape[2]
        clip = per_frame.reshape(gt, tp, gh * gw, channels, p, p).permute(0, 2, 3, 1, 4, 5)
        pixels = clip.reshape(gt * gh * gw, channels * tp * p * p).contiguous()
        return pixels, torch.tensor([[gt, gh, gw]], dtype=torch.long)

    def _expand_placeholders(self, ids: list[int], grid: torch.Tensor, kind: str) -> list[int]:
        """Repeat each image/video placeholder token once per merged visual token."""
        token = self.video_token_id if kind == "video" else self.image_token_id
        counts = [int(row.prod()) // (self.merge**2) for row in grid]
        if ids.count(token) != len(counts):
            raise EngineFailure(
                f"prompt has {ids.count(token)} {kind} placeholders for {len(counts)} inputs; "
                "is the chat template a Qwen2-VL one?"
            )
        out: list[int] = []
        it = iter(counts)
        for tok in ids:
            if tok == token:
                out.extend([token] * next(it))
            else:
                out.append(tok)
        return out


# --- batched generation on one replica (one thread) ------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


_FATAL_MARKERS = (
    "CUDA error",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUDNN_STATUS_EXECUTION_FAILED",
    "NCCL error",
    "ECC error",
    "device lost",
    "no CUDA-capable device",
)


def is_fatal(exc: BaseException) -> bool:
    """Errors after which the GPU (CUDA context) cannot be trusted: retire the replica."""
    if _is_oom(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return any(marker in str(exc) for marker in _FATAL_MARKERS)


# An absolute filesystem path (not a hub id like "Qwen/Qwen2-VL-2B", not the "//" of a URL).
_PATH_RE = re.compile(r"(?<![\w.:/])/(?:[\w.\-]+/)*[\w.\-]+")


def scrub_paths(text: str) -> str:
    """Replace filesystem paths: messages reach callers and /health, which must not show them."""
    return _PATH_RE.sub("<path>", text)


def describe_error(exc: BaseException) -> str:
    """Short, path-free description for callers and /health."""
    lines = str(exc).strip().splitlines()
    first = scrub_paths(lines[0][:200]) if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class BatchGenerator:
    """Collates prepared shots and runs one constrained ``generate`` on one model copy.

    Not thread-safe by design: each replica's generator is used by that replica's thread only.
    """

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any,
        grammar: Any | None,
        pad_token_id: int,
        stop_token_ids: list[int],
        max_new_tokens: int,
        min_new_tokens: int | None,
        temperature: float,
        image_token_id: int,
        video_token_id: int,
    ) -> None:
        from transformers import GenerationConfig

        self.model = model
        self.device = model_loading.input_device(model)
        self.tokenizer = tokenizer
        self.grammar = grammar
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
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=self.stop_token_ids,
            pad_token_id=pad_token_id,
            repetition_penalty=1.0,
            num_beams=1,
            use_cache=True,
            **sampling,
        )

    def collate(self, shots: list[PreparedShot]) -> dict[str, torch.Tensor]:
        """Left-padded token ids, masks and the concatenated pixels of the whole batch, on the
        model's input device (pixels are copied shot by shot and concatenated there)."""
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
        if images:
            on_device["pixel_values"] = self._pixels_on_device(images)
        if videos:
            on_device["pixel_values_videos"] = self._pixels_on_device(videos)
        return on_device

    def _pixels_on_device(self, shots: list[PreparedShot]) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.cat([s.pixel_values for s in shots])
        return torch.cat([s.pixel_values.to(self.device, non_blocking=True) for s in shots])

    def generate(self, shots: list[PreparedShot]) -> list[RawResult]:
        """One ``generate`` call for the whole batch; results in input order."""
        from transformers import LogitsProcessorList

        inputs = self.collate(shots)
        prompt_length = inputs["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if self.grammar is not None:
            processors.append(GrammarLogitsProcessor(self.grammar))
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, generation_config=self.generation_config, logits_processor=processors
            )
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
        """``generate`` with failure isolation: an out-of-memory batch is retried in halves.

        Returns one entry per shot: its result, or the exception that failed it. Fatal errors
        (see ``is_fatal``) propagate: the caller retires the replica.
        """
        try:
            return list(self.generate(shots))
        except BaseException as exc:
            if is_fatal(exc) or not isinstance(exc, Exception):
                raise
            if _is_oom(exc) and len(shots) > 1:
                logger.warning("out of memory on a batch of %d; retrying in halves", len(shots))
                self._free_memory()
                half = len(shots) // 2
                return self.run(shots[:half]) + self.run(shots[half:])
            if _is_oom(exc):
                self._free_memory()
            logger.exception("generation failed for a batch of %d shots", len(shots))
            return [exc] * len(shots)

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# --- the engine ------------------------------------------------------------------------------


@dataclass
class _Item:
    shot: PreparedShot
    future: asyncio.Future[ModelOutput]
    enqueued: float


@dataclass
class _Replica:
    index: int
    generator: BatchGenerator
    executor: ThreadPoolExecutor
    gpu: int | None
    dead: str | None = None


class Admission:
    """Queue room held for ``shots`` shots: granted by ``Engine.admit``, used by ``analyze``.

    The room is reserved from admission until ``analyze`` puts the prepared shots in the queue
    (it is "consumed" then), so a caller can decode its frames knowing it will not be refused
    afterwards. ``release`` gives unused room back; it is idempotent and a no-op once consumed.
    """

    def __init__(self, queue: BatchQueue[Any] | None, shots: int) -> None:
        self._queue = queue
        self.shots = shots
        self._done = queue is None or shots == 0

    @property
    def active(self) -> bool:
        """Still holding room: neither consumed nor released."""
        return not self._done

    def consume(self) -> None:
        """The room became queued items (``BatchQueue.put`` took over the reservation)."""
        self._done = True

    def release(self) -> None:
        """Give the room back (the shots will not be queued)."""
        if not self._done:
            self._done = True
            assert self._queue is not None
            self._queue.release(self.shots)


class Engine:
    """Loads the model on every GPU and serves ``analyze`` through one batching queue.

    ``force_new_tokens`` and ``use_grammar`` exist for benchmarks only: with
    ``force_new_tokens=N`` and ``use_grammar=False`` every answer is exactly N tokens, so
    throughput figures do not depend on what random weights happen to write.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        force_new_tokens: int | None = None,
        use_grammar: bool = True,
    ) -> None:
        self.settings = settings
        self.model_id: str = model_loading.model_display_id(settings)
        self.device: str = "pending"
        self.placement: str = "pending"
        self.replicas: int = 0
        self.shots_served: int = 0
        self.failed: str | None = None
        self.on_batch: Callable[[int, float], None] | None = None
        self.max_new_tokens: int = settings.model.max_new_tokens
        self._force_new_tokens = force_new_tokens
        self._use_grammar = use_grammar and force_new_tokens is None
        self._loaded = False
        self._started = False
        self._stopping = False
        self._replicas: list[_Replica] = []
        self._preparer: ShotPreparer | None = None
        self._prep_pool: ThreadPoolExecutor | None = None
        self._queue: BatchQueue[_Item] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._rate = 0.0  # shots/s, moving average, for Retry-After
        self.refused: int = 0  # requests answered Overloaded
        self.waited: int = 0  # requests admitted after waiting in the admission line

    # -- read-only state --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Loaded, workers running, not draining, not failed."""
        return self._loaded and self._started and not self._stopping and self.failed is None

    @property
    def queue_depth(self) -> int:
        """Shots accepted and not yet in a running batch."""
        return self._queue.depth if self._queue is not None else 0

    @property
    def waiting_requests(self) -> int:
        """Requests in the admission line, waiting for queue room."""
        return self._queue.waiting if self._queue is not None else 0

    def stats(self) -> dict[str, Any]:
        """Serving figures for /health, metrics, tests and benchmarks (no secrets, no paths)."""
        return {
            "ready": self.ready,
            "replicas": self.replicas,
            "live_replicas": sum(1 for r in self._replicas if r.dead is None),
            "queue_depth": self.queue_depth,
            "queue_limit": self.settings.server.max_queued_shots,
            "waiting_requests": self.waiting_requests,
            "waiting_shots": self._queue.waiting_items if self._queue is not None else 0,
            "shots_served": self.shots_served,
            "requests_waited": self.waited,
            "requests_refused": self.refused,
            "shots_per_s": round(self._rate, 3),
        }

    # -- direct access for tests and benchmarks (bypasses the queue) ------------------------

    def prepare(self, shot: ShotInput) -> PreparedShot:
        """Turn one shot into model inputs (thread-safe); raises NotReady before ``load``."""
        if self._preparer is None:
            raise NotReady("the model is not loaded")
        return self._preparer.prepare(shot)

    def generator(self, replica: int = 0) -> BatchGenerator:
        """The batch generator of one replica, to run ``generate`` on it directly.

        Not thread-safe: use it only while the engine is not started (or stopped), from one
        thread; on a GPU call ``use_replica_device`` on that thread first.
        """
        if not self._replicas:
            raise NotReady("the model is not loaded")
        return self._replicas[replica].generator

    def use_replica_device(self, replica: int = 0) -> None:
        """Make the replica's GPU the calling thread's current CUDA device (no-op on CPU)."""
        if self._replicas and self._replicas[replica].gpu is not None:
            torch.cuda.set_device(self._replicas[replica].gpu)

    def gpu_info(self) -> list[dict[str, Any]]:
        """Per visible GPU: index, name, memory used/total (MB), utilisation % (None if n/a)."""
        if self.device != "cuda" or not torch.cuda.is_available():
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

    # -- lifecycle --------------------------------------------------------------------------

    def load(self) -> None:
        """Load tokenizer, image processor, grammar and one model per replica; then warm up.

        Blocking (minutes for big models): call it from a thread. Raises ConfigError when the
        checkpoint cannot be found or used, EngineFailure when the warm-up generation fails;
        ``failed`` is set in both cases.
        """
        try:
            self._load()
        except ConfigError as exc:
            self.failed = scrub_paths(exc.message)  # the exception keeps the full message
            raise
        except Exception as exc:
            self.failed = describe_error(exc)
            logger.exception("model load failed")
            raise EngineFailure(f"model load failed: {describe_error(exc)}") from exc

    def _load(self) -> None:
        cfg = self.settings.model
        t0 = time.perf_counter()
        config = model_loading.load_config(self.settings)
        model_class = model_loading.model_class_for(config)
        plan = model_loading.plan_loading(self.settings, config, model_class)
        self.device = plan.device
        logger.info(
            "loading %s: device=%s placement=%s dtype=%s attention=%s weights=%.2f GiB",
            self.model_id,
            plan.device,
            plan.placement,
            str(plan.dtype).removeprefix("torch."),
            plan.attn_implementation,
            plan.weight_bytes / model_loading.GiB,
        )
        tokenizer, image_processor = model_loading.load_tokenizer_and_image_processor(self.settings)
        image_token_id = int(config.image_token_id)
        video_token_id = int(config.video_token_id)
        for text, expected in (
            ("<|image_pad|>", image_token_id),
            ("<|video_pad|>", video_token_id),
        ):
            if tokenizer.convert_tokens_to_ids(text) != expected:
                raise ConfigError(
                    f"'{self.model_id}': tokenizer id of {text} does not match the model config"
                )
        stop_ids = self._stop_token_ids(config, tokenizer)
        pad_id = int(tokenizer.pad_token_id)
        vocab_size = int(config.get_text_config().vocab_size)

        grammar = None
        if self._force_new_tokens is not None:
            max_new, min_new = self._force_new_tokens, self._force_new_tokens
        else:
            max_new, min_new = cfg.max_new_tokens, None
        if self._use_grammar:
            # Compiled once per tokenizer, shared by every replica and every generate call.
            grammar = compile_output_grammar(
                tokenizer,
                vocab_size=vocab_size,
                stop_token_ids=stop_ids,
                caption_max_chars=cfg.caption_max_chars,
            )
            needed = worst_case_new_tokens(cfg.caption_max_chars)
            if max_new < needed:
                logger.info(
                    "max_new_tokens raised from %d to %d so a %d-character caption and the six "
                    "scores always fit (generation stops at the end of the JSON anyway)",
                    max_new,
                    needed,
                    cfg.caption_max_chars,
                )
                max_new = needed
        self.max_new_tokens = max_new

        models = model_loading.load_models(self.settings, model_class, plan)
        self._preparer = ShotPreparer(
            tokenizer,
            image_processor,
            image_token_id=image_token_id,
            video_token_id=video_token_id,
            frames_as=cfg.frames_as,
            caption_max_chars=cfg.caption_max_chars,
            pixel_dtype=plan.dtype,
            pin_memory=plan.device == "cuda",
        )
        replicas = []
        for index, model in enumerate(models):
            generator = BatchGenerator(
                model,
                tokenizer=tokenizer,
                grammar=grammar,
                pad_token_id=pad_id,
                stop_token_ids=stop_ids,
                max_new_tokens=max_new,
                min_new_tokens=min_new,
                temperature=cfg.temperature,
                image_token_id=image_token_id,
                video_token_id=video_token_id,
            )
            gpu = plan.gpus[index] if plan.placement == "replicate" else None
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"qwen-gen-{index}")
            replicas.append(_Replica(index, generator, executor, gpu))
        self._replicas = replicas
        self.placement = plan.placement
        self.replicas = len(replicas)
        self._warm_up()
        self._loaded = True
        logger.info(
            "model %s ready: %d replica(s), max_new_tokens=%d, frames_as=%s, loaded in %.1f s",
            self.model_id,
            self.replicas,
            self.max_new_tokens,
            cfg.frames_as,
            time.perf_counter() - t0,
        )

    @staticmethod
    def _stop_token_ids(config: Any, tokenizer: Any) -> list[int]:
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

    def _warm_up(self) -> None:
        """Run one tiny shot on every replica: surfaces problems at start-up, warms kernels."""
        assert self._preparer is not None
        frame = PIL.Image.new("RGB", (56, 56))
        shot = self._preparer.prepare(
            ShotInput(shot_id=0, frames=[frame, frame], duration=1.0, audio_summary=None)
        )
        for replica in self._replicas:
            if replica.gpu is not None:
                torch.cuda.set_device(replica.gpu)
            replica.generator.generate([shot])

    async def start(self) -> None:
        """Start one batching worker per replica; call inside the running loop, after load."""
        if not self._loaded:
            raise NotReady("the model is not loaded")
        if self._started:
            return
        batching = self.settings.batching
        self._queue = BatchQueue(
            max_items=self.settings.server.max_queued_shots,
            max_batch=batching.max_batch_size,
            max_wait_s=batching.max_wait_ms / 1000.0,
            alive=lambda item: not item.future.done(),
            max_waiters=self.settings.server.max_waiting_requests,
        )
        workers = min(8, max(2, (os.cpu_count() or 2) // 2))
        self._prep_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qwen-prep")
        loop = asyncio.get_running_loop()
        for replica in self._replicas:
            if replica.gpu is not None:  # the replica thread's current CUDA device, once
                await loop.run_in_executor(replica.executor, torch.cuda.set_device, replica.gpu)
            self._workers.append(
                asyncio.create_task(self._worker(replica), name=f"qwen-batcher-{replica.index}")
            )
        self._started = True

    async def stop(self, timeout: float) -> None:
        """Refuse new work, let queued and running batches finish within ``timeout``, cancel."""
        self._stopping = True
        if self._queue is not None:
            self._queue.close()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=max(0.0, timeout))
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "stop: cancelling %d batch worker(s) after %.1f s", len(pending), timeout
                )
                await asyncio.gather(*pending, return_exceptions=True)
        if self._queue is not None:
            self._fail_items(self._queue.drain(), NotReady("the server is shutting down"))
        for replica in self._replicas:
            replica.executor.shutdown(wait=False, cancel_futures=True)
        if self._prep_pool is not None:
            # Let running preparations finish: their callers then get NotReady, not a
            # cancellation they did not ask for.
            self._prep_pool.shutdown(wait=False, cancel_futures=False)

    # -- serving ----------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        if self.failed is not None:
            raise NotReady(f"the model engine failed: {self.failed}", retry_after_s=30)
        if self._stopping:
            raise NotReady("the server is shutting down")
        if not self._loaded or not self._started or self._queue is None:
            raise NotReady("the model is still loading")

    def _retry_after(self, shots: int) -> int:
        """Seconds until room for ``shots`` is likely, spread with jitter.

        The estimate is the work ahead (queued plus waiting shots) over the measured rate; a
        random 0-50 % on top keeps refused callers from all coming back in the same second.
        """
        assert self._queue is not None
        ahead = self._queue.depth + self._queue.waiting_items + shots
        base = ahead / self._rate if self._rate > 0 else 2.0
        return int(min(60, max(1, math.ceil(base * random.uniform(1.0, 1.5)))))

    async def _acquire(self, shots: int) -> None:
        """Reserve queue room for ``shots``, waiting in line; Overloaded / NotReady if not."""
        assert self._queue is not None
        queue = self._queue
        server = self.settings.server
        if shots > queue.max_items:
            self.refused += 1
            raise Overloaded(
                f"{shots} shots can never fit in the analysis queue (limit {queue.max_items}, "
                "server.max_queued_shots); send smaller batches",
                retry_after_s=self._retry_after(0),
            )
        try:
            if await queue.acquire(shots, server.admission_wait_s):
                self.waited += 1
        except QueueClosed:
            raise NotReady("the server is shutting down") from None
        except QueueFull:
            self.refused += 1
            raise Overloaded(
                f"the analysis queue is full ({queue.depth} shots queued, limit "
                f"{queue.max_items}; {queue.waiting} requests waiting for room); retry later",
                retry_after_s=self._retry_after(shots),
            ) from None

    @contextlib.asynccontextmanager
    async def admit(self, shots: int) -> AsyncIterator[Admission]:
        """Hold queue room for ``shots`` shots while the caller gets them ready.

        ``async with engine.admit(n) as admission: ... await engine.analyze(inputs, admission)``.
        Entering waits in the first-come-first-served admission line when the queue is full, for
        up to ``server.admission_wait_s``; it raises Overloaded (503 + Retry-After) when no room
        came in that time, when ``max_waiting_requests`` already wait, or when ``shots`` exceeds
        the queue; NotReady when not serving. Room not used by ``analyze`` is given back on exit.
        This is the only place requests are refused for load, so nothing is decoded for a
        request that will be refused.
        """
        self._check_accepting()
        assert self._queue is not None
        if shots > 0:
            await self._acquire(shots)
        admission = Admission(self._queue, shots)
        try:
            yield admission
        finally:
            admission.release()

    async def analyze(
        self, shots: list[ShotInput], admission: Admission | None = None
    ) -> list[ModelOutput]:
        """Analyse shots (merged with other callers' into GPU batches); results in input order.

        ``admission`` is the room granted by ``admit`` for these shots; without one, room is
        acquired here the same way. Raises Overloaded when the queue cannot take them,
        NotReady when not serving, InvalidInput for frames the image processor refuses,
        EngineFailure when generation failed for any of them.
        """
        if admission is None:
            async with self.admit(len(shots)) as own:
                return await self.analyze(shots, own)
        if admission.shots != len(shots) or (shots and not admission.active):
            raise ValueError(
                f"admission for {admission.shots} shots used for {len(shots)} (or used twice)"
            )
        self._check_accepting()
        if not shots:
            return []
        assert self._queue is not None and self._preparer is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        try:
            prepared = await asyncio.gather(
                *(loop.run_in_executor(self._prep_pool, self._preparer.prepare, s) for s in shots)
            )
            self._check_accepting()
            now = time.perf_counter()
            items = [_Item(p, loop.create_future(), now) for p in prepared]
            queue.put(items)
            admission.consume()
        finally:
            admission.release()  # no-op once consumed
        try:
            results = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()  # the workers skip shots nobody waits for
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)  # type: ignore[arg-type]

    async def _worker(self, replica: _Replica) -> None:
        """Take batches from the shared queue and run them on this replica, one at a time."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._queue.next_batch()
            if batch is None:
                return
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(
                    replica.executor, replica.generator.run, [i.shot for i in batch]
                )
            except asyncio.CancelledError:
                self._fail_items(batch, NotReady("the server is shutting down"))
                raise
            except BaseException as exc:  # fatal for this replica (see is_fatal)
                reason = describe_error(exc)
                logger.error("replica %d retired after a fatal error: %s", replica.index, reason)
                replica.dead = reason
                self._fail_items(batch, EngineFailure(f"generation failed: {reason}"))
                if all(r.dead for r in self._replicas):
                    self.failed = reason
                    self._fail_items(
                        self._queue.drain(), NotReady(f"the model engine failed: {reason}")
                    )
                return
            elapsed = time.perf_counter() - started
            self._deliver(batch, outcomes, started, elapsed)

    def _deliver(
        self,
        batch: list[_Item],
        outcomes: list[RawResult | BaseException],
        started: float,
        elapsed: float,
    ) -> None:
        cfg = self.settings.model
        served = 0
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(
                    EngineFailure(f"generation failed: {describe_error(outcome)}")
                )
                continue
            parsed = parse_model_output(outcome.text, cfg.caption_max_chars)
            if not parsed.complete and self._use_grammar:
                logger.warning(
                    "shot %s: incomplete model answer (%s missing)",
                    item.shot.shot_id,
                    ", ".join(parsed.missing),
                )
            scores = {a: parsed.scores[a] for a in ATTRIBUTES}
            timings = {
                "queue_ms": round((started - item.enqueued) * 1000.0, 2),
                "preprocess_ms": round(item.shot.prep_ms, 2),
                "generate_ms": round(elapsed * 1000.0, 2),
            }
            counts = {
                "batch_size": len(batch),
                "new_tokens": int(outcome.new_tokens),
                "prompt_tokens": len(item.shot.input_ids),
            }
            item.future.set_result(
                ModelOutput(parsed.caption, scores, timings, counts, list(parsed.missing))
            )
            served += 1
        self.shots_served += served
        if elapsed > 0:
            rate = len(batch) / elapsed
            self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), elapsed)
            except Exception:  # metrics must never break serving
                logger.exception("on_batch hook failed")

    @staticmethod
    def _fail_items(items: list[_Item], exc: Exception) -> None:
        for item in items:
            if not item.future.done():
                # A copy each: one exception object raised in several tasks would share (and
                # grow) one traceback.
                item.future.set_exception(copy.copy(exc))
