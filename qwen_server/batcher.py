"""A bounded asyncio queue whose consumers take work in batches.

Producers ``reserve`` room for their items first (so a caller is refused *before* any work is
done for it), then ``put`` them. Consumers - one per model replica - call ``next_batch``, which
waits for a first item and then up to ``max_wait_s`` for more, returning at most ``max_batch``
items: several callers' items end up in one batch, and one caller's items may span several
batches. Items whose caller has gone away (``alive`` returns False) are dropped, not run.

Everything here runs on the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """Reserving would exceed the queue's bound."""


class BatchQueue(Generic[T]):
    """Bounded FIFO merged into batches; see the module docstring."""

    def __init__(
        self,
        *,
        max_items: int,
        max_batch: int,
        max_wait_s: float,
        alive: Callable[[T], bool] = lambda item: True,
    ) -> None:
        if max_items < 1 or max_batch < 1:
            raise ValueError("max_items and max_batch must be positive")
        self.max_items = max_items
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self._alive = alive
        self._items: deque[T] = deque()
        self._reserved = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    @property
    def depth(self) -> int:
        """Items waiting: reserved (being prepared) plus queued."""
        return self._reserved + len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def reserve(self, n: int) -> None:
        """Claim room for ``n`` items or raise QueueFull; pair with ``put`` or ``release``."""
        if self.depth + n > self.max_items:
            raise QueueFull(f"{self.depth} items queued, {n} more would exceed {self.max_items}")
        self._reserved += n

    def release(self, n: int) -> None:
        """Give back room reserved for items that will not be put."""
        self._reserved = max(0, self._reserved - n)

    def put(self, items: Iterable[T]) -> None:
        """Queue items whose room was reserved; wakes the consumers."""
        items = list(items)
        self._reserved = max(0, self._reserved - len(items))
        self._items.extend(items)
        self._wakeup.set()

    def close(self) -> None:
        """Stop waiting consumers once the queue is empty; queued items are still handed out."""
        self._closed = True
        self._wakeup.set()

    def drain(self) -> list[T]:
        """Remove and return every queued item (at shutdown, to fail them)."""
        items = list(self._items)
        self._items.clear()
        return items

    def _pop_alive(self, batch: list[T]) -> None:
        while self._items and len(batch) < self.max_batch:
            item = self._items.popleft()
            if self._alive(item):
                batch.append(item)

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for a put/close; False on timeout."""
        self._wakeup.clear()
        if timeout is None:
            await self._wakeup.wait()
            return True
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def next_batch(self) -> list[T] | None:
        """The next batch (1..max_batch items), or None once closed and empty."""
        loop = asyncio.get_running_loop()
        batch: list[T] = []
        while not batch:
            self._pop_alive(batch)
            if batch:
                break
            if self._closed:
                return None
            await self._wait(None)
        # Got a first item: wait briefly for the batch to fill, unless closing (drain fast).
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await self._wait(remaining):
                break
            self._pop_alive(batch)
        self._pop_alive(batch)
        return batch
