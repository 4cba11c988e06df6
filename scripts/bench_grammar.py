#!/usr/bin/env python
"""Grammar cost per decode step on the CPU: accept + fill + apply, old way vs new way.

For batch 32/64/128 and the 6-attribute and the 38-attribute answer
(``examples/trailer_attributes.yaml``), every row replays a real answer (captions of film shots,
mixed scores) tokenized with the chosen tokenizer, and each decode step's grammar work is timed
on (batch, vocab) float32 CPU logits:

* **old**: what the engine did before (a new matcher per row and a new bitmask every
  ``generate``, a Python loop of accepts, xgrammar's batched fill, xgrammar's CPU kernel over
  every row; the caption bound inside the grammar, ``[ -~]{0,199}``);
* **ws**: ``GrammarLogitsProcessor`` with the replica's ``GrammarWorkspace`` but its mask cache
  off (pooled matchers, one bitmask, threaded fill of every row every step, the caption bound
  beside an unbounded grammar): the engine before the mask cache;
* **cached**: the same with the workspace's ``MaskCache`` (``grammar_mask_cache``): xgrammar
  fills once per distinct grammar state, every other row copies the cached row. "cold" is a
  call on an empty cache (matchers pooled), "warm" a later call (a serving replica is warm
  after its first batches); hit rate = rows served from the cache / rows masked.

With ``model.grammar_overlap`` the accept + fill part runs during the forward pass; the apply
part is xgrammar's fused kernel on a GPU. Figures: µs per step (mean over the whole answer,
median and best of ``--repeats`` runs); the target is accept + fill <= 1 ms per step at batch
64 (10 % of a 2B decode step). The apply column is a CPU figure (a pass over a 64 x 151,936
float32 tensor is memory-bound at tens of ms on this shared CPU; on a GPU it is the fused
kernel), measured once; "+apply" is accept + fill in that run: the pass evicts the CPU caches,
which makes the next accept + fill 2-5x slower (a CPU-only server; on a GPU the apply is on
the device).

Tokenizers, most realistic first: ``--tokenizer DIR`` (a Hugging Face tokenizer, e.g. a local
Qwen2-VL checkpoint), ``--qwen-tiktoken FILE`` (Qwen's byte-level BPE ranks, 151,643 tokens, the
same vocabulary as Qwen2's tokenizer, e.g. ``qwen.tiktoken`` from the dashscope wheel on PyPI:
``pip download dashscope --no-deps``), else the tiny test checkpoint's 834-token tokenizer
(fills are then far cheaper than with the real vocabulary: say so when quoting).

    python scripts/bench_grammar.py --qwen-tiktoken /tmp/qwen.tiktoken --skip-old
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import xgrammar as xgr

REPO_ROOT = Path(__file__).resolve().parents[1]
for extra in (REPO_ROOT, REPO_ROOT / "scripts"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from qwen_server.contract.constants import ATTRIBUTES  # noqa: E402
from qwen_server.contract.vocabulary import load_vocabulary_file  # noqa: E402
from qwen_server.engine.grammar import (  # noqa: E402
    GrammarCache,
    output_ebnf,
    render_answer,
    tokenizer_info,
)
from qwen_server.engine.grammar_processor import GrammarLogitsProcessor  # noqa: E402
from qwen_server.engine.grammar_workspace import GrammarWorkspace  # noqa: E402

QWEN2_LOGITS = 151_936  # Qwen2-VL's logits width (tokenizer 151,657 + padding)
TARGET_US = 1000.0
CAPTIONS = [
    "A man in a dark coat walks slowly down a rain-soaked street at night.",
    "Two women argue in a bright kitchen while rain hits the window behind them.",
    "A car speeds along a wet highway, headlights streaking past the lens.",
    "Close-up of a child's face, eyes wide, as a door creaks open off screen.",
    "An empty street at dawn, fog rolling between the buildings.",
    "Soldiers run across a field under heavy fire; smoke fills the frame.",
    "A lone rider crosses a desert ridge against a red evening sky.",
    "Hands shuffle a deck of cards on a green table under a single lamp.",
]


def qwen2_tokenizer(tiktoken_file: Path) -> Any:
    """Qwen2's tokenizer rebuilt from Qwen's BPE ranks (same ids, pre-tokenizer, specials)."""
    from make_tiny_model import _PRETOKENIZE_REGEX, SPECIAL_TOKENS
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Ranks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path: str) -> dict[bytes, int]:
            ranks = {}
            for line in Path(path).read_bytes().splitlines():
                if line:
                    token, rank = line.split()
                    ranks[base64.b64decode(token)] = int(rank)
            return ranks

    converted = _Ranks(
        str(tiktoken_file), pattern=_PRETOKENIZE_REGEX, extra_special_tokens=list(SPECIAL_TOKENS)
    ).converted()
    return PreTrainedTokenizerFast(
        tokenizer_object=converted, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def load_tokenizer(args: argparse.Namespace) -> tuple[Any, int, str]:
    """The tokenizer, the logits width and a label for the report."""
    from transformers import AutoTokenizer

    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        return tok, max(len(tok), QWEN2_LOGITS if len(tok) > 150_000 else len(tok)), "given"
    if args.qwen_tiktoken:
        return qwen2_tokenizer(args.qwen_tiktoken), QWEN2_LOGITS, "Qwen2 (151,657 tokens)"
    from make_tiny_model import build_tiny_model

    out = Path(tempfile.mkdtemp(prefix="bench-grammar-")) / "tiny"
    build_tiny_model(out)
    tok = AutoTokenizer.from_pretrained(out)
    return tok, -(-len(tok) // 64) * 64 + 64, f"tiny test tokenizer ({len(tok)} tokens)"


def answers(tok: Any, names: tuple[str, ...], rows: int, stop: int) -> list[list[int]]:
    """One tokenized real answer per row, ending with the stop token."""
    rng = random.Random(7)
    out = []
    for row in range(rows):
        scores = {n: rng.choice([0, 3, 12, 35, 50, 64, 78, 85, 91, 100]) for n in names}
        text = render_answer(CAPTIONS[row % len(CAPTIONS)], scores)
        out.append(tok.encode(text, add_special_tokens=False) + [stop])
    return out


class OldProcessor:
    """The engine's processor before the workspace (kept here as the baseline)."""

    def __init__(self, grammars: list[Any], vocab: int) -> None:
        self.grammars, self.vocab = grammars, vocab
        self.matchers: list[Any] = []
        self.bitmask: torch.Tensor | None = None
        self.batch = xgr.BatchGrammarMatcher()

    def __call__(self, last: list[int] | None, scores: torch.Tensor) -> None:
        if not self.matchers:  # built on the first step of every generate
            self.matchers = [xgr.GrammarMatcher(g) for g in self.grammars]
            self.bitmask = xgr.allocate_token_bitmask(len(self.grammars), self.vocab)
        if last is not None:
            for i, m in enumerate(self.matchers):
                if not m.is_terminated():
                    m.accept_token(last[i])
        active = [i for i, m in enumerate(self.matchers) if not m.is_terminated()]
        self.batch.batch_fill_next_token_bitmask(
            [self.matchers[i] for i in active], self.bitmask, active
        )

    def apply(self, scores: torch.Tensor) -> None:
        xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=self.vocab)


def replay(
    kind: str,
    grammars: list[Any],
    seqs: list[list[int]],
    vocab: int,
    ws: Any,
    stop: int,
    *,
    apply: bool = True,
) -> tuple[float, float, int]:
    """Per-step µs (accept + fill, apply) of replaying ``seqs`` through one processor."""
    rows = len(seqs)
    steps = max(len(s) for s in seqs)
    base = torch.randn(rows, vocab)
    work = torch.empty_like(base)
    fill_us: list[float] = []
    apply_us: list[float] = []
    ids = torch.zeros((rows, 1), dtype=torch.long)
    proc: Any = OldProcessor(grammars, vocab) if kind == "old" else None
    if proc is None:
        proc = GrammarLogitsProcessor(grammars, workspace=ws)
    for step in range(steps):
        if apply:
            work.copy_(base)
        last = None if step == 0 else ids[:, -1].tolist()
        if kind == "old":
            t0 = time.perf_counter()
            proc(last, work)
            t1 = time.perf_counter()
            if apply:
                proc.apply(work)
            t2 = time.perf_counter()
            fill_us.append((t1 - t0) * 1e6)
            apply_us.append((t2 - t1) * 1e6)
        else:
            t0 = time.perf_counter()
            proc.prepare(ids)  # accept + fill (what overlaps the forward pass)
            t1 = time.perf_counter()
            if apply:
                proc.mask(work)  # apply
            t2 = time.perf_counter()
            fill_us.append((t1 - t0) * 1e6)
            apply_us.append((t2 - t1) * 1e6)
        nxt = [s[step] if step < len(s) else stop for s in seqs]
        ids = torch.cat([ids, torch.tensor(nxt)[:, None]], dim=1)
    if kind == "new":
        proc.close()
    return sum(fill_us) / steps, sum(apply_us) / steps, steps


def cached_run(
    served: Any, seqs: list[list[int]], vocab: int, ws: GrammarWorkspace, stop: int
) -> tuple[float, float]:
    """accept + fill µs per step of one call and the cache hit rate over it."""
    cache = ws.mask_cache
    assert cache is not None
    before = cache.stats()
    fill_us, _, _ = replay("new", [served] * len(seqs), seqs, vocab, ws, stop, apply=False)
    after = cache.stats()
    rows = {k: after[k] - before[k] for k in after if k != "mask_cache_hit_rate"}
    masked = sum(rows[f"mask_cache_{k}"] for k in ("hits", "fills", "shared", "uncached"))
    return fill_us, rows["mask_cache_hits"] / max(1, masked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer directory")
    parser.add_argument("--qwen-tiktoken", type=Path, help="Qwen's BPE ranks (qwen.tiktoken)")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--caption-max-chars", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="fill threads (0: the default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--skip-old", action="store_true", help="not the pre-workspace baseline")
    args = parser.parse_args(argv)

    tok, vocab, label = load_tokenizer(args)
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    info = tokenizer_info(tok, vocab_size=vocab, stop_token_ids=[stop])
    trailer = load_vocabulary_file(REPO_ROOT / "examples" / "trailer_attributes.yaml")[0].names
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)
    cache = GrammarCache(info, caption_max_chars=args.caption_max_chars)
    plain = GrammarWorkspace(threads=args.threads, mask_cache_entries=0)
    print(f"tokenizer: {label}; logits width {vocab}; fill threads {plain.threads}; ", end="")
    print(f"torch threads {torch.get_num_threads()}; caption <= {args.caption_max_chars} chars")
    header = f"{'attrs':>5} {'batch':>5} {'steps':>5} | {'old a+f':>8} | {'ws med/min':>11} "
    header += f"{'+apply':>6} | {'cached cold':>11} {'hit':>5} | {'warm med/min':>12} {'hit':>5} "
    header += f"{'+apply':>6} | {'apply(CPU)':>10} | {'entries':>7} | target"
    print(header)
    median = statistics.median
    for names in (ATTRIBUTES, trailer):
        exact = (
            None
            if args.skip_old
            else compiler.compile_grammar(output_ebnf(args.caption_max_chars, names))
        )
        served = cache.get(names)
        for batch in args.batches:
            seqs = answers(tok, names, batch, stop)
            grammars = [served] * batch
            old = f"{'-':>8}"
            if exact is not None:
                of, _, _ = replay("old", [exact] * batch, seqs, vocab, None, stop, apply=False)
                old = f"{of:8.0f}"
            replay("new", grammars, seqs, vocab, plain, stop, apply=False)  # warm the pool
            ws_runs = [
                replay("new", grammars, seqs, vocab, plain, stop, apply=False)[0]
                for _ in range(args.repeats)
            ]
            ws_thrashed, _, _ = replay("new", grammars, seqs, vocab, plain, stop)
            # A workspace per row of the table, its matcher pool warm and its mask cache
            # emptied: the first timed call is the cold-cache figure.
            ws = GrammarWorkspace(threads=args.threads)
            cached_run(served, seqs, vocab, ws, stop)
            assert ws.mask_cache is not None
            ws.mask_cache.clear()
            cold_us, cold_hit = cached_run(served, seqs, vocab, ws, stop)
            warm = [cached_run(served, seqs, vocab, ws, stop) for _ in range(args.repeats)]
            warm_us, warm_hit = median(w[0] for w in warm), warm[-1][1]
            warm_min = min(w[0] for w in warm)
            warm_thrashed, apply_us, steps = replay("new", grammars, seqs, vocab, ws, stop)
            entries = len(ws.mask_cache) if ws.mask_cache is not None else 0
            ws.close()
            verdict = ("ok" if warm_us <= TARGET_US else "over") if batch == 64 else ""
            print(
                f"{len(names):>5} {batch:>5} {steps:>5} | {old} | "
                f"{median(ws_runs):5.0f}/{min(ws_runs):5.0f} {ws_thrashed:6.0f} | "
                f"{cold_us:11.0f} {cold_hit:5.0%} | "
                f"{warm_us:6.0f}/{warm_min:5.0f} {warm_hit:5.0%} {warm_thrashed:6.0f} | "
                f"{apply_us:10.0f} | {entries:>7} | {verdict}"
            )
    plain.close()
    print(
        "µs per decode step (accept + fill), mean over the whole answer; med/min: median and "
        f"best of {args.repeats} runs (the CPU is shared: the best is the least disturbed). "
        "+apply: one run with the CPU apply between steps, as on a CPU-only server (the "
        "memory-bound pass evicts the CPU caches; on a GPU the apply is on the device). "
        "old: before the workspace (caption bound in the grammar); ws: "
        "workspace, every row filled by xgrammar; cached: the workspace's mask cache. "
        "target: cached warm <= 1000 µs at batch 64; accept + fill runs during the forward pass "
        "with model.grammar_overlap; apply is the CPU path (on CUDA: xgrammar's fused kernel)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
