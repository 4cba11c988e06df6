"""Filled grammar masks kept per (compiled grammar, state), least recently used out.

Why: at batch 64 most rows of a decode step are in a state some row was in before (every
caption character after the first leaves the matcher in the same state; after the caption the
answer is fixed-order keys and scores), and a fill with Qwen2's 151,936-token vocabulary plus
the caption bound costs more than copying the 19 KB row the last fill produced. The state key
comes from ``grammar_states`` (exact: see there); the value is the row exactly as the processor
would have written it (xgrammar's fill, then the caption bound).

Bounded: at most ``max_entries`` rows (``DEFAULT_MASK_CACHE_ENTRIES`` = 2,048: 39 MB at
Qwen2's 151,936 logits, 0.2 MB with the tiny test tokenizer), one slab allocated as it fills.
The 38-attribute answer visits ~300 states and a caption ~210 (one per bound level), so the
default holds several vocabularies at once. One cache per ``GrammarWorkspace`` (per replica);
not thread-safe, like the workspace: only the step being prepared uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

DEFAULT_MASK_CACHE_ENTRIES = 2048


class MaskCache:
    """An LRU of bitmask rows: key -> slot of one int32 slab ``(entries, words)``."""

    def __init__(self, max_entries: int = DEFAULT_MASK_CACHE_ENTRIES) -> None:
        self.max_entries = max(1, max_entries)
        self._slots: OrderedDict[tuple[int, Hashable], int] = OrderedDict()
        self._slab: np.ndarray | None = None
        # Grammars with entries, kept alive so that their id is not reused while keyed.
        self._grammars: dict[int, list[Any]] = {}  # id -> [grammar, entries]
        self.hits = 0  # rows served from the cache
        self.fills = 0  # rows xgrammar filled (then stored)
        self.shared = 0  # rows copied from a row filled in the same step (same state)
        self.uncached = 0  # rows in an unknown state: filled and not stored
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._slots)

    def lookup(self, grammar_id: int, state: Hashable) -> int | None:
        """The slot holding the mask of the grammar ``id(grammar) == grammar_id`` in ``state``
        (now most recent), or None. Ids are safe keys: a grammar with entries is kept alive."""
        key = (grammar_id, state)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
        return slot

    def copy_out(self, bitmask: np.ndarray, rows: list[int], slots: list[int]) -> None:
        """Write the cached rows ``slots`` into ``bitmask``'s ``rows`` (numpy: one memcpy a row,
        no torch thread pool: measured faster than torch's index ops on the shared CPU)."""
        assert self._slab is not None
        slab = self._slab
        for row, slot in zip(rows, slots, strict=True):
            bitmask[row] = slab[slot]

    def store(self, grammar: Any, state: Hashable, row: np.ndarray) -> None:
        """Keep ``row`` (a filled bitmask row) as ``grammar``'s mask in ``state``."""
        key = (id(grammar), state)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._take_slot(row.shape[0])
            self._slots[key] = slot
            owner = self._grammars.setdefault(id(grammar), [grammar, 0])
            owner[1] += 1
        else:
            self._slots.move_to_end(key)
        assert self._slab is not None
        self._slab[slot] = row

    def _take_slot(self, words: int) -> int:
        slab = self._slab
        if slab is not None and slab.shape[1] != words:
            self.clear()  # another tokenizer: nothing stored applies
            slab = None
        used = len(self._slots)
        if slab is None or used >= slab.shape[0]:
            if slab is not None and slab.shape[0] >= self.max_entries:
                return self._evict()
            size = min(self.max_entries, max(64, 2 * (slab.shape[0] if slab is not None else 0)))
            grown = np.empty((size, words), dtype=np.int32)
            if slab is not None:
                grown[: slab.shape[0]] = slab
            self._slab = grown
        return used

    def _evict(self) -> int:
        (grammar_id, _), slot = self._slots.popitem(last=False)
        owner = self._grammars[grammar_id]
        owner[1] -= 1
        if owner[1] == 0:
            del self._grammars[grammar_id]
        self.evictions += 1
        return slot

    def clear(self) -> None:
        """Drop every entry (and the slab)."""
        self._slots.clear()
        self._grammars.clear()
        self._slab = None

    def stats(self) -> dict[str, Any]:
        """Figures for benchmarks: entries, rows by source, the hit rate over all rows."""
        rows = self.hits + self.fills + self.shared + self.uncached
        return {
            "mask_cache_entries": len(self._slots),
            "mask_cache_hits": self.hits,
            "mask_cache_fills": self.fills,
            "mask_cache_shared": self.shared,
            "mask_cache_uncached": self.uncached,
            "mask_cache_evictions": self.evictions,
            "mask_cache_hit_rate": round(self.hits / rows, 4) if rows else None,
        }
