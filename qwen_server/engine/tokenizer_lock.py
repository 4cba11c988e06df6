"""One lock per tokenizer: every engine call into a tokenizer holds it (thread safety).

The engine calls one Hugging Face fast tokenizer from every preparation thread (chat template,
prompt encoding) and from every replica's generate thread (answer decoding). A fast tokenizer
keeps its truncation and padding as state on one shared Rust object and rewrites that state
whenever a call asks for different settings (``set_truncation_and_padding``), while
``encode_batch``/``decode`` run with the GIL released:

* with tokenizers < 0.23 a rewrite during another thread's encode raises ``RuntimeError:
  Already borrowed`` (transformers #47085; measured here: 2,000 of 2,000 rewrites beside 4
  encoding threads with tokenizers 0.22.1);
* with tokenizers >= 0.23.1 (what transformers 5.17+ requires) the Rust object is guarded and
  nothing raises, but a setting and the encode that relies on it are still two steps: with 16
  threads sharing one tokenizer, half of them truncating, 240 of 1,600 calls came back with the
  other half's setting (tokenizers 0.23.3), silently.

The engine's own calls all use the same settings, so today neither can happen; the lock makes
that true by construction rather than by convention, whatever tokenizers version is installed
and whatever a later call site passes.

Why a lock rather than one tokenizer copy per thread (``scripts/bench_prepare_threads.py
--tokenizer`` with a Qwen2-sized tokenizer, 151,657 ids, a ~310-token prompt, 8 threads, on 2
cores shared with other work, so only the comparison counts): an encode took about the same
behind the lock as unprotected (2.0 vs 2.3 ms) and no less with per-thread copies (2.6-10.7
ms), while each copy costs 1.9-3.7 s of ``copy.deepcopy`` and 12-27 MB, paid by every
preparation and generate thread. The lock is held for one encode or decode (well under a
millisecond on an idle core): even 30 shots/s keep it busy a few per cent of the time.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def lock_for(tokenizer: Any) -> threading.RLock:
    """The one lock of ``tokenizer``: every wrapper of the same object shares it."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(tokenizer)
        if lock is None:
            # Reentrant: a templating call may end up encoding through the same wrapper.
            lock = _LOCKS[tokenizer] = threading.RLock()
        return lock


class SerialTokenizer:
    """The calls the engine makes into a tokenizer, each under the tokenizer's lock.

    Wraps rather than copies: the wrapped tokenizer stays usable (unlocked) for load-time work
    on one thread, e.g. building xgrammar's tokenizer info. ``raw`` is that tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.raw: Any = tokenizer.raw if isinstance(tokenizer, SerialTokenizer) else tokenizer
        self._lock = lock_for(self.raw)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self.raw(*args, **kwargs)

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self.raw.apply_chat_template(*args, **kwargs)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self.raw.encode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self.raw.decode(*args, **kwargs)

    def __len__(self) -> int:
        with self._lock:
            return len(self.raw)
