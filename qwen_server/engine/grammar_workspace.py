"""What a replica keeps between constrained ``generate`` calls: matchers, bitmask, threads.

Building a matcher costs ~60 µs and a bitmask for batch 64 is 1.2 MB, every call; so each
replica keeps a pool of matchers per compiled grammar (``reset()`` between uses, ~5 µs), one
bitmask allocated at the largest batch seen and sliced (pinned when it is copied to a GPU), an
LRU of filled masks per grammar state (``grammar_mask_cache``),
xgrammar's ``BatchGrammarMatcher`` (fills many rows on its own C++ threads, without the GIL) and
one worker thread that runs the next step's accept + fill while the model computes the forward
pass (``grammar_processor``).

Not thread-safe by design, like ``BatchGenerator``: one replica thread uses it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import xgrammar as xgr

from .grammar_mask_cache import DEFAULT_MASK_CACHE_ENTRIES, MaskCache

# Grammars whose matchers are kept; a server has one per vocabulary in use (GrammarCache holds
# 64), so this only bounds the memory of a caller that invents name lists.
_POOLED_GRAMMARS = 64


def default_grammar_threads() -> int:
    """Threads that fill one replica's masks when the setting is 0: half the usable cores
    (the rest run the generate thread, tokenization and the server), at most 8 (xgrammar's
    fill scales little past that at batch 128)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, min(8, cores // 2))


class GrammarWorkspace:
    """Matcher pool, reusable bitmask and mask-filling threads of one replica."""

    def __init__(
        self,
        *,
        threads: int = 0,
        pin_memory: bool = False,
        mask_cache_entries: int = DEFAULT_MASK_CACHE_ENTRIES,
    ) -> None:
        """``mask_cache_entries``: the cap of the filled-mask LRU (``grammar_mask_cache``);
        0 turns it off (every row filled by xgrammar every step, as before)."""
        self.threads = threads if threads > 0 else default_grammar_threads()
        self.mask_cache = MaskCache(mask_cache_entries) if mask_cache_entries > 0 else None
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.batch_matcher = xgr.BatchGrammarMatcher(self.threads)
        self._pool: OrderedDict[int, tuple[Any, list[xgr.GrammarMatcher]]] = OrderedDict()
        self._bitmask: torch.Tensor | None = None
        self._vocab_size = 0
        self._executor: ThreadPoolExecutor | None = None
        self._copy_done: Any = None  # CUDA event after the last host->device bitmask copy
        self.matchers_built = 0  # for tests and benchmarks: how many were ever constructed
        self.steps = 0  # decode steps masked, and how many of them overlapped the forward pass
        self.overlapped_steps = 0

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The worker thread of the overlapped step (created on first use)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-grammar")
        return self._executor

    def acquire(self, grammars: list[Any]) -> list[xgr.GrammarMatcher]:
        """One matcher per grammar (compiled), each at the start of its grammar."""
        matchers = []
        for grammar in grammars:
            entry = self._pool.get(id(grammar))
            if entry is not None and entry[0] is grammar:
                self._pool.move_to_end(id(grammar))
                free = entry[1]
            else:
                free = []
            if free:
                matcher = free.pop()
                matcher.reset()
            else:
                matcher = xgr.GrammarMatcher(grammar)
                self.matchers_built += 1
            matchers.append(matcher)
        return matchers

    def release(self, grammars: list[Any], matchers: list[xgr.GrammarMatcher]) -> None:
        """Give matchers back (pairs with ``acquire``); they are reset when next taken."""
        for grammar, matcher in zip(grammars, matchers, strict=True):
            # The entry keeps the grammar alive, so its id cannot be reused while pooled.
            entry = self._pool.get(id(grammar))
            if entry is None or entry[0] is not grammar:
                entry = self._pool[id(grammar)] = (grammar, [])
            self._pool.move_to_end(id(grammar))
            entry[1].append(matcher)
        while len(self._pool) > _POOLED_GRAMMARS:
            self._pool.popitem(last=False)

    def bitmask(self, rows: int, vocab_size: int) -> torch.Tensor:
        """A ``(rows, ceil(vocab/32))`` int32 view of the one bitmask (contents undefined)."""
        have = self._bitmask
        if have is None or have.shape[0] < rows or self._vocab_size != vocab_size:
            size = max(rows, have.shape[0] if have is not None else 0)
            words = -(-vocab_size // 32)
            # A normal tensor even inside generate's inference mode (see CaptionState).
            with torch.inference_mode(False):
                self._bitmask = torch.empty(
                    (size, words), dtype=torch.int32, pin_memory=self.pin_memory
                )
            self._vocab_size = vocab_size
        assert self._bitmask is not None
        return self._bitmask[:rows]

    def to_device(self, mask: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``mask`` (a view of the bitmask) on ``device``, copied without blocking the host.

        The copy from pinned memory runs later on the stream; ``wait_for_copy`` keeps the next
        fill from overwriting the host bitmask before the copy has read it.
        """
        if device.type != "cuda":
            return mask.to(device)
        on_device = mask.to(device, non_blocking=self.pin_memory)
        if self.pin_memory:
            self._copy_done = torch.cuda.Event()
            self._copy_done.record()
        return on_device

    def wait_for_copy(self) -> None:
        """Block until the last bitmask copy to the GPU has read the host buffer."""
        if self._copy_done is not None:
            self._copy_done.synchronize()
            self._copy_done = None

    def close(self) -> None:
        """Stop the worker thread (replica retired or engine stopped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
