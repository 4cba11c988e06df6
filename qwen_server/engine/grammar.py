"""The answer format, its xgrammar grammar per attribute vocabulary, and the grammar cache.

The model answers each shot in two lines::

    caption: A man walks down a dark corridor toward the camera.
    suspense=78 darkness=85 ambiguity=60 emotional_tension=55 intensity=40 motion=20

Why this and not JSON: with ``generate`` every token, forced or not, is one decode step of the
whole batch. In JSON each score costs the separator, the quoted key, the colon and a space around
one or two free digit tokens (``, "darkness": 85`` is ~8 tokens, 2 of them free); here it is the
key (the leading space merges into the word token), ``=`` and the digits (`` darkness=85`` is
~4 tokens, 2 free). Each value still sits right after its name, which is what the model attends
to when it writes the value (a bare list of numbers would be cheaper still, but the model would
have to count its way through 38 positions). Measured sizes: ``scripts/bench_server.py
--vocabulary`` and the README.

* The caption is printable ASCII on one line, starts with a visible character and is at most
  ``caption_max_chars`` long.
* Each score is an integer 0..100 (no leading zeros), scaled to [0, 1] by the parser. Integers are
  cheaper than decimals (at most 3 tokens) and cannot run on forever.

Every allowed character is one ASCII byte, so every token the grammar admits adds at least one
character and an answer is at most ``len(longest answer) + 1`` (the stop token) tokens:
``worst_case_new_tokens`` gives that bound and the engine never generates fewer tokens than it,
so a constrained answer always terminates complete. The parser (``output_parsing``) still accepts
garbage (unconstrained generation, truncated text, JSON) and falls back to neutral values.

The grammar depends on the attribute names (and their order) only, so it is compiled once per
distinct name list and kept in a bounded LRU (``GrammarCache``); descriptions only change the
prompt. What is compiled for serving has an unbounded caption; the bound is enforced on the
bitmask by ``caption_limit`` (same language, ~500x cheaper mask fills: see that module).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xgrammar as xgr

from .caption_limit import CaptionLimit
from .grammar_states import AnswerLayout
from .output_parsing import SCORE_MAX

logger = logging.getLogger("qwen_server.structured")

CAPTION_PREFIX = "caption: "
LINE_BREAK = "\n"
PAIR_SEPARATOR = " "
KEY_VALUE = "="

# Printable ASCII: one byte per character, no line breaks (the caption is one line).
_CAPTION_FIRST = r"[!-~]"
_CAPTION_CHAR = r"[ -~]"


def render_answer(caption: str, scores: dict[str, int]) -> str:
    """An answer in the exact layout the grammar admits (tests, benchmarks, the bound)."""
    pairs = PAIR_SEPARATOR.join(f"{name}{KEY_VALUE}{value}" for name, value in scores.items())
    return f"{CAPTION_PREFIX}{caption}{LINE_BREAK}{pairs}"


def worst_case_new_tokens(caption_max_chars: int, names: Sequence[str]) -> int:
    """Most tokens a grammar-conforming answer can take: its longest text plus the stop token.

    Every admitted token carries at least one ASCII character, so characters bound tokens.
    """
    longest = render_answer("x" * caption_max_chars, dict.fromkeys(names, SCORE_MAX))
    return len(longest) + 1


def _literal(text: str) -> str:
    """``text`` as an EBNF string literal (JSON string escapes are what xgrammar reads)."""
    import json

    return json.dumps(text)


def _attribute_literals(names: Sequence[str]) -> list[str]:
    """The fixed text before each score: line break or separator, name, ``=``."""
    return [
        f"{LINE_BREAK if i == 0 else PAIR_SEPARATOR}{n}{KEY_VALUE}" for i, n in enumerate(names)
    ]


def answer_layout(names: Sequence[str]) -> AnswerLayout:
    """The fixed parts of the answer for ``names``, as ``output_ebnf`` lays them out (the mask
    cache walks them to know each row's grammar state)."""
    return AnswerLayout(CAPTION_PREFIX, _attribute_literals(names))


def output_ebnf(caption_max_chars: int | None, names: Sequence[str]) -> str:
    """The answer grammar for ``names`` in xgrammar's EBNF, in the exact layout generated.

    ``caption_max_chars=None`` leaves the caption unbounded: what serving compiles, with the
    bound enforced by ``CaptionLimit`` (a bounded repetition makes every caption step check the
    whole vocabulary).
    """
    if caption_max_chars is not None and caption_max_chars < 1:
        raise ValueError("caption_max_chars must be at least 1")
    if not names:
        raise ValueError("an answer needs at least one attribute")
    parts = [_literal(CAPTION_PREFIX), "caption"]
    for literal in _attribute_literals(names):
        parts += [_literal(literal), "score"]
    rest = "*" if caption_max_chars is None else f"{{0,{caption_max_chars - 1}}}"
    return (
        f"root ::= {' '.join(parts)}\n"
        f"caption ::= {_CAPTION_FIRST} {_CAPTION_CHAR}{rest}\n"
        f'score ::= "0" | [1-9] [0-9]? | "{SCORE_MAX}"\n'
    )


@dataclass(frozen=True, eq=False)
class AnswerGrammar:
    """What a constrained row needs: the compiled grammar (unbounded caption) and the bound.

    ``caption`` is None for a grammar that bounds the caption itself (``output_ebnf`` with a
    number: tests and benchmarks compare the two). ``layout`` is set for the serving grammar
    only (unbounded caption): it makes the row's masks cacheable (``grammar_mask_cache``).
    """

    compiled: Any  # xgr.CompiledGrammar
    caption: CaptionLimit | None
    layout: AnswerLayout | None = None


def tokenizer_info(tokenizer: Any, *, vocab_size: int, stop_token_ids: list[int]) -> Any:
    """xgrammar's view of ``tokenizer``; built once per checkpoint.

    ``vocab_size`` is the model's logits width (often larger than the tokenizer: padded rows are
    masked out); ``stop_token_ids`` must be the ids ``generate`` stops on, so the grammar can
    only end where generation ends.
    """
    return xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
    )


class GrammarCache:
    """Compiled answer grammars, one per distinct attribute-name list, least recently used out.

    Thread-safe: preparation threads call ``get`` concurrently. A name list is compiled once even
    when several threads ask for it at the same time (they wait for the first). Compile times
    are kept for ``stats`` (benchmarks, /metrics-free debugging).
    """

    def __init__(self, info: Any, *, caption_max_chars: int, max_entries: int = 64) -> None:
        self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self._caption_max_chars = caption_max_chars
        self.caption_limit = CaptionLimit(
            info, prefix=CAPTION_PREFIX, caption_max_chars=caption_max_chars
        )
        self._max_entries = max(1, max_entries)
        self._entries: OrderedDict[tuple[str, ...], AnswerGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self._compiling: dict[tuple[str, ...], threading.Event] = {}
        self.compiles = 0
        self.hits = 0
        self.compile_ms: list[float] = []

    def get(self, names: Sequence[str]) -> AnswerGrammar:
        """The answer grammar for ``names`` (compiled now if new)."""
        key = tuple(names)
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return self._entries[key]
                pending = self._compiling.get(key)
                if pending is None:
                    pending = self._compiling[key] = threading.Event()
                    break
            pending.wait()  # another thread compiles this list; then read the cache again
        try:
            t0 = time.perf_counter()
            compiled = AnswerGrammar(
                self._compiler.compile_grammar(output_ebnf(None, key)),
                self.caption_limit,
                answer_layout(key),
            )
            elapsed = (time.perf_counter() - t0) * 1000.0
            with self._lock:
                self._entries[key] = compiled
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
                self.compiles += 1
                self.compile_ms.append(elapsed)
                del self.compile_ms[:-256]
            logger.info(
                "compiled the answer grammar for %d attributes in %.1f ms", len(key), elapsed
            )
            return compiled
        finally:
            with self._lock:
                self._compiling.pop(key).set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> dict[str, Any]:
        """Cache figures for the engine's ``stats()``: entries, compiles, slowest compile."""
        with self._lock:
            slowest = max(self.compile_ms) if self.compile_ms else None
            return {
                "grammars_cached": len(self._entries),
                "grammar_compiles": self.compiles,
                "grammar_compile_ms_max": round(slowest, 2) if slowest is not None else None,
            }
