"""The caption's length bound, enforced beside the grammar instead of inside it.

Why: a bounded repetition in the grammar (``[ -~]{0,199}``) makes almost every token's
acceptance depend on how many characters are left, so xgrammar cannot precompute it and checks
the whole vocabulary at every caption step: with Qwen2's 151,936-token vocabulary that costs
2-25 ms per row per step (measured with xgrammar 0.2.9), i.e. 0.1-1.5 s per decode step at batch
64. An unbounded caption (``[ -~]*``) fills in ~5 µs per row. So the compiled grammar has an
unbounded caption and this module enforces the bound on the bitmask: a token may only be chosen
if the caption characters it adds fit in what is left.

The language is exactly the bounded grammar's: a token is admitted iff the grammar admits it and
``pos + caption_bytes(token) <= prefix + caption_max_chars``, where ``pos`` counts the answer's
bytes before its first line break and ``caption_bytes`` is the token's bytes before its first
line break (all of them if it has none). Every admitted caption byte is one ASCII character.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_NEWLINE = 0x0A


class CaptionLimit:
    """Per-tokenizer tables that bound the caption to ``caption_max_chars`` characters.

    Built once per tokenizer (``GrammarCache``); shared read-only by every processor. The
    per-batch state (bytes written so far per row) lives in ``CaptionState``.
    """

    def __init__(self, info: Any, *, prefix: str, caption_max_chars: int) -> None:
        vocab = list(info.decoded_vocab)
        vocab += [b""] * max(0, int(info.vocab_size) - len(vocab))
        byte_len = np.array([len(t) for t in vocab], dtype=np.int64)
        newline_at = np.array([t.find(b"\n") for t in vocab], dtype=np.int64)
        # Bytes each token adds before the line break that ends the caption.
        caption_bytes = np.where(newline_at >= 0, newline_at, byte_len)
        self.vocab_size = len(vocab)
        self.token_bytes: list[bytes] = vocab  # per token id (grammar_states reads it)
        self.limit = len(prefix.encode()) + caption_max_chars  # bytes allowed before the break
        self.byte_len = torch.from_numpy(byte_len)
        self.ends_caption = torch.from_numpy(newline_at >= 0)
        # Rows with at least ``longest`` bytes left need no restriction: every token fits.
        self.longest = int(caption_bytes.max(initial=0))
        words = -(-self.vocab_size // 32)
        # A tight row has 0..min(longest - 1, limit) bytes left.
        levels = min(self.longest, self.limit + 1)
        # fits[r]: the packed (xgrammar layout, int32, bit i of word w = token 32w+i) set of
        # tokens whose caption bytes are <= r, for r in 0..levels-1.
        fits = np.zeros((max(levels, 1), words * 32), dtype=bool)
        for r in range(levels):
            fits[r, : self.vocab_size] = caption_bytes <= r
        packed = np.packbits(fits, axis=1, bitorder="little").view(np.int32)
        self.fits = torch.from_numpy(packed.copy())

    def level(self, pos: int) -> int:
        """The restriction a row needs with ``pos`` bytes before its line break: the row of
        ``fits`` to AND into its mask, or -1 when every token fits (the mask cache's key)."""
        left = self.limit - pos
        return max(left, 0) if left < self.longest else -1

    def restrict_levels(self, bitmask: torch.Tensor, rows: list[int], levels: list[int]) -> None:
        """Clear, in ``bitmask``'s ``rows``, the tokens over each row's level (-1: none)."""
        tight = [(row, level) for row, level in zip(rows, levels, strict=True) if level >= 0]
        if not tight:
            return
        idx = torch.tensor([row for row, _ in tight], dtype=torch.int64)
        fits = self.fits[torch.tensor([level for _, level in tight], dtype=torch.int64)]
        bitmask[idx] &= fits[:, : bitmask.shape[1]]

    def new_state(self, rows: int) -> CaptionState:
        """A fresh per-batch state: every row at the start of its answer."""
        return CaptionState(self, rows)


class CaptionState:
    """Bytes written before the line break, per row of one ``generate`` call."""

    def __init__(self, limit: CaptionLimit, rows: int) -> None:
        self.limit = limit
        # Normal tensors even when built inside generate's inference mode: the overlapped step
        # updates them in place from a worker thread, which is not in inference mode.
        with torch.inference_mode(False):
            self.pos = torch.zeros(rows, dtype=torch.int64)
            self.open = torch.ones(rows, dtype=torch.bool)  # before the caption's line break

    def advance(self, rows: list[int], tokens: list[int]) -> None:
        """Rows ``rows`` accepted ``tokens`` (same order)."""
        if not rows:
            return
        idx = torch.tensor(rows, dtype=torch.int64)
        tok = torch.tensor(tokens, dtype=torch.int64).clamp_(0, self.limit.vocab_size - 1)
        was_open = self.open[idx]
        self.pos[idx] += torch.where(was_open, self.limit.byte_len[tok], 0)
        self.open[idx] = was_open & ~self.limit.ends_caption[tok]

    def restrict(self, bitmask: torch.Tensor, rows: list[int]) -> None:
        """Clear, in ``bitmask``'s ``rows``, every token that would overrun the caption."""
        if not rows:
            return
        idx = torch.tensor(rows, dtype=torch.int64)
        left = self.limit.limit - self.pos[idx]
        tight = self.open[idx] & (left < self.limit.longest)
        if not bool(tight.any()):
            return
        rows_t = idx[tight]
        fits = self.limit.fits[left[tight].clamp_(min=0)]
        bitmask[rows_t] &= fits[:, : bitmask.shape[1]]
