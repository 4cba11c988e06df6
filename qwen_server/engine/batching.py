"""Batching: the bounded queue that merges callers' shots into GPU batches, and admission to it.

``BatchQueue`` is a bounded asyncio queue whose consumers take work in batches, with a fair wait
line; ``AdmissionLine`` decides who gets room in it (and when to come back: Retry-After);
``Admission`` is the room one request holds between being admitted and queueing its shots.

Producers ``reserve`` room for their items first (so a caller is refused *before* any work is
done for it), then ``put`` them. ``acquire`` is the waiting form of ``reserve``: a producer that
finds no room joins a first-come-first-served line and is granted room as consumers take items,
or gets QueueFull after ``timeout`` seconds (or at once when the line is full). Nobody jumps the
line: while anyone waits, newcomers wait behind them even if their items would fit. Under
sustained overload every caller is therefore served in arrival order instead of whoever happens
to retry at the instant room frees up (which starved most clients of a retrying crowd).

Consumers - one per model replica - call ``next_batch``, which waits for a first item and then
up to ``max_wait_s`` for more, returning at most ``max_batch`` items: several callers' items end
up in one batch, and one caller's items may span several batches. Items whose caller has gone
away (``alive`` returns False) are dropped, not run. With a ``length`` (the engine: prompt
tokens), a consumer that finds more items than fit a batch takes a batch of similar lengths
rather than the oldest ones, without starving anyone (``length_buckets``).

Everything here runs on the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import NotReady, Overloaded
from . import length_buckets

T = TypeVar("T")


class QueueFull(Exception):
    """Reserving would exceed the queue's bound (or the wait for room timed out)."""


class QueueClosed(Exception):
    """The queue was closed (shutting down) before room was granted."""


@dataclass(eq=False)
class _Waiter:
    """One producer in the wait line: how much room it needs and how to wake it."""

    n: int
    granted: asyncio.Future[None]


class BatchQueue(Generic[T]):
    """Bounded FIFO merged into batches; see the module docstring."""

    def __init__(
        self,
        *,
        max_items: int,
        max_batch: int,
        max_wait_s: float,
        alive: Callable[[T], bool] = lambda item: True,
        max_waiters: int = 0,
        length: Callable[[T], int] | None = None,
    ) -> None:
        if max_items < 1 or max_batch < 1 or max_waiters < 0:
            raise ValueError("max_items and max_batch must be positive, max_waiters >= 0")
        self.max_items = max_items
        self.max_waiters = max_waiters
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self._alive = alive
        self._length = length  # None: batches are taken oldest first (FIFO)
        self._skips: dict[int, int] = {}  # id(item) -> batches that passed it over
        self._items: deque[T] = deque()
        self._reserved = 0
        self._closed = False
        self._wakeup = asyncio.Event()
        self._waiters: deque[_Waiter] = deque()

    @property
    def depth(self) -> int:
        """Items waiting: reserved (being prepared) plus queued."""
        return self._reserved + len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        """Producers in the wait line."""
        return len(self._waiters)

    @property
    def waiting_items(self) -> int:
        """Items the producers in the wait line asked room for."""
        return sum(w.n for w in self._waiters)

    def _fits_now(self, n: int) -> bool:
        return not self._waiters and self.depth + n <= self.max_items

    def reserve(self, n: int) -> None:
        """Claim room for ``n`` items or raise QueueFull; pair with ``put`` or ``release``.

        Refused while others wait in line, even when the items would fit: no line jumping.
        """
        if self._closed:
            raise QueueClosed("the queue is closed")
        if not self._fits_now(n):
            raise QueueFull(
                f"{self.depth} items queued and {len(self._waiters)} callers waiting; "
                f"{n} more would exceed {self.max_items}"
            )
        self._reserved += n

    async def acquire(self, n: int, timeout: float) -> bool:
        """Claim room for ``n`` items, waiting in line up to ``timeout`` seconds for it.

        Raises QueueFull when ``n`` can never fit, when the line already holds ``max_waiters``
        producers, or when the wait timed out; QueueClosed when the queue closed meanwhile.
        On return the room is reserved: pair with ``put`` or ``release``. Cancellation while
        waiting leaves nothing reserved. Returns whether it had to wait in line.
        """
        if n > self.max_items:
            raise QueueFull(f"{n} items can never fit in a queue of {self.max_items}")
        if self._closed or self._fits_now(n):
            self.reserve(n)
            return False
        if timeout <= 0 or len(self._waiters) >= self.max_waiters:
            self.reserve(n)  # raises QueueFull with the current figures
            return False
        loop = asyncio.get_running_loop()
        waiter = _Waiter(n, loop.create_future())
        self._waiters.append(waiter)
        expiry = loop.call_later(timeout, self._expire, waiter, timeout)
        try:
            await waiter.granted
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                if waiter.granted.exception() is None:  # granted, then cancelled: give it back
                    self.release(n)
            else:
                self._remove(waiter)
            raise
        finally:
            expiry.cancel()
        return True

    def _expire(self, waiter: _Waiter, timeout: float) -> None:
        if waiter.granted.done():
            return
        self._remove(waiter)
        waiter.granted.set_exception(
            QueueFull(f"no room for {waiter.n} items within {timeout:g} s")
        )

    def _remove(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self._grant()  # the ones behind it may fit now

    def _grant(self) -> None:
        """Hand freed room to the line, strictly in arrival order."""
        while self._waiters:
            head = self._waiters[0]
            if head.granted.done():  # cancelled; its task removes nothing twice
                self._waiters.popleft()
                continue
            if self.depth + head.n > self.max_items:
                return
            self._waiters.popleft()
            self._reserved += head.n
            head.granted.set_result(None)

    def release(self, n: int) -> None:
        """Give back room reserved for items that will not be put."""
        self._reserved = max(0, self._reserved - n)
        self._grant()

    def put(self, items: Iterable[T]) -> None:
        """Queue items whose room was reserved; wakes the consumers."""
        items = list(items)
        self._reserved = max(0, self._reserved - len(items))
        self._items.extend(items)
        self._wakeup.set()

    def close(self) -> None:
        """Stop waiting consumers once the queue is empty; queued items are still handed out.

        Producers still in the wait line get QueueClosed.
        """
        self._closed = True
        self._wakeup.set()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.granted.done():
                waiter.granted.set_exception(QueueClosed("the queue is closed"))

    def drain(self) -> list[T]:
        """Remove and return every queued item (at shutdown, to fail them)."""
        items = list(self._items)
        self._items.clear()
        self._skips.clear()
        self._grant()
        return items

    def _pop_alive(self, batch: list[T]) -> None:
        popped = False
        while self._items and len(batch) < self.max_batch:
            item = self._items.popleft()
            popped = True
            self._skips.pop(id(item), None)
            if self._alive(item):
                batch.append(item)
        if popped:
            self._grant()

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

    def _take(self) -> list[T]:
        """Remove the next batch from the queue: FIFO, or by length when more wait than fit."""
        batch: list[T] = []
        if self._length is None or len(self._items) <= self.max_batch:
            self._pop_alive(batch)
            return batch
        alive = [item for item in self._items if self._alive(item)]
        candidates = alive[: self.max_batch * length_buckets.LOOKAHEAD_BATCHES]
        picked = length_buckets.choose(
            [self._length(item) for item in candidates],
            [self._skips.get(id(item), 0) for item in candidates],
            self.max_batch,
        )
        batch = [candidates[i] for i in picked]
        taken = {id(item) for item in batch}
        for item in candidates[: picked[-1]]:  # passed over: a younger one goes first
            if id(item) not in taken:
                self._skips[id(item)] = self._skips.get(id(item), 0) + 1
        kept: deque[T] = deque()
        for item in self._items:
            if id(item) in taken or not self._alive(item):
                self._skips.pop(id(item), None)
            else:
                kept.append(item)
        self._items = kept
        self._grant()
        return batch

    async def next_batch(self) -> list[T] | None:
        """The next batch (1..max_batch items), or None once closed and empty.

        Waits for a first item, then up to ``max_wait_s`` for a full batch (not when closing:
        drain fast), then takes one (``_take``).
        """
        loop = asyncio.get_running_loop()
        while True:
            while not self._first_alive():
                if self._closed:
                    return None
                await self._wait(None)
            deadline = loop.time() + self.max_wait_s
            while len(self._items) < self.max_batch and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self._wait(remaining):
                    break
            batch = self._take()
            if batch:  # empty when another consumer took everything meanwhile
                return batch

    def _first_alive(self) -> bool:
        """Drop items nobody waits for from the head; whether an item is left."""
        popped = False
        while self._items and not self._alive(self._items[0]):
            self._skips.pop(id(self._items.popleft()), None)
            popped = True
        if popped:
            self._grant()
        return bool(self._items)


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


class AdmissionLine:
    """Admission to one ``BatchQueue``: room now, a place in line, or Overloaded + Retry-After.

    Owns the figures of admission: requests refused, requests that waited, and the measured
    service rate (shots/s, a moving average fed by ``observe``) that Retry-After is based on.
    """

    def __init__(self, queue: BatchQueue[Any], wait_s: float) -> None:
        self.queue = queue
        self.wait_s = wait_s
        self.refused = 0  # requests answered Overloaded
        self.waited = 0  # requests admitted after waiting in the line
        self.rate = 0.0  # shots/s, moving average

    def observe(self, shots: int, elapsed: float) -> None:
        """A batch of ``shots`` took ``elapsed`` seconds: update the service rate."""
        if elapsed > 0:
            rate = shots / elapsed
            self.rate = rate if self.rate <= 0 else 0.8 * self.rate + 0.2 * rate

    def retry_after(self, shots: int) -> int:
        """Seconds until room for ``shots`` is likely, spread with jitter.

        The estimate is the work ahead (queued plus waiting shots) over the measured rate; a
        random 0-50 % on top keeps refused callers from all coming back in the same second.
        """
        ahead = self.queue.depth + self.queue.waiting_items + shots
        base = ahead / self.rate if self.rate > 0 else 2.0
        return int(min(60, max(1, math.ceil(base * random.uniform(1.0, 1.5)))))

    async def acquire(self, shots: int) -> Admission:
        """Reserve queue room for ``shots``, waiting in line; Overloaded / NotReady if not."""
        queue = self.queue
        if shots > queue.max_items:
            self.refused += 1
            raise Overloaded(
                f"{shots} shots can never fit in the analysis queue (limit {queue.max_items}, "
                "server.max_queued_shots); send smaller batches",
                retry_after_s=self.retry_after(0),
            )
        try:
            if shots > 0 and await queue.acquire(shots, self.wait_s):
                self.waited += 1
        except QueueClosed:
            raise NotReady("the server is shutting down") from None
        except QueueFull:
            self.refused += 1
            raise Overloaded(
                f"the analysis queue is full ({queue.depth} shots queued, limit "
                f"{queue.max_items}; {queue.waiting} requests waiting for room); retry later",
                retry_after_s=self.retry_after(shots),
            ) from None
        return Admission(queue, shots)
