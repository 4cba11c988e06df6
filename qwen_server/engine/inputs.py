"""Input preparation (CPU, thread-safe): frames -> pixel patches, prompt -> token ids.

Frames go through the checkpoint's image processor, either as separate images or packed as one
video clip (``frames_as``); the prompt is rendered with the chat template and the visual
placeholders are expanded to one token per merged patch.
"""

from __future__ import annotations

import time
from typing import Any

import PIL.Image
import torch

from ..errors import EngineFailure, InvalidInput
from .grammar import GrammarCache, worst_case_new_tokens
from .prompts import build_messages, render_prompt
from .tokenizer_lock import SerialTokenizer
from .types import PreparedShot, ShotInput


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
        max_new_tokens: int,
        grammars: GrammarCache | None = None,
        force_new_tokens: int | None = None,
        pixel_dtype: torch.dtype = torch.float32,
    ) -> None:
        """``grammars`` compiles the answer grammar of each vocabulary (None: unconstrained);
        ``max_new_tokens`` is the configured floor of every answer's token budget, raised per
        vocabulary so that a whole answer always fits; ``force_new_tokens`` (benchmarks) fixes
        it instead."""
        # The checkpoint's tokenizer, for single-threaded load-time use (xgrammar's tokenizer
        # info, benchmarks); preparation threads call it only through ``_serial``, under the
        # lock the generators' decoding shares (tokenizer_lock.py).
        self.tokenizer = tokenizer
        self._serial = SerialTokenizer(tokenizer)
        # Pixels leave preparation in the model's dtype (the vision tower casts to it anyway):
        # half the bytes of float32. They stay in ordinary (pageable) memory while queued; each
        # replica copies a batch's pixels through its one pinned staging buffer (staging.py).
        self.pixel_dtype = pixel_dtype
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.frames_as = frames_as
        self.caption_max_chars = caption_max_chars
        self.max_new_tokens = max_new_tokens
        self.grammars = grammars
        self.force_new_tokens = force_new_tokens
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
            vocabulary=shot.vocabulary,
        )
        names = shot.vocabulary.names
        grammar = self.grammars.get(names) if self.grammars is not None else None
        text = render_prompt(self._serial, messages)
        ids = self._serial(text, add_special_tokens=False)["input_ids"]
        input_ids = self._expand_placeholders(ids, grid, kind)
        seconds = 1.0  # qwen-vl-utils' default sampling, 2 fps x temporal patch 2
        if kind == "video" and shot.duration and shot.duration > 0:
            seconds = shot.duration / len(frames) * self.temporal
        return PreparedShot(
            shot_id=shot.shot_id,
            input_ids=input_ids,
            pixel_values=pixels.to(self.pixel_dtype).contiguous(),
            grid_thw=grid.to(torch.long),
            kind=kind,
            seconds_per_grid=float(seconds),
            names=names,
            grammar=grammar,
            max_new_tokens=self.answer_tokens(names),
            prep_ms=(time.perf_counter() - t0) * 1000.0,
        )

    def answer_tokens(self, names: tuple[str, ...]) -> int:
        """The token budget of one answer carrying ``names``: never below the grammar's worst
        case, so a constrained answer always ends complete (generation stops at its end)."""
        if self.force_new_tokens is not None:
            return self.force_new_tokens
        if self.grammars is None:
            return self.max_new_tokens
        return max(self.max_new_tokens, worst_case_new_tokens(self.caption_max_chars, names))

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
