#!/usr/bin/env python
"""What a bigger attribute vocabulary costs: answer tokens, shots/s, grammar compile and masks.

Side by side for the six default attributes and a vocabulary file (default: the trailer
pipeline's 38, ``examples/trailer_attributes.yaml``), in one run:

1. **Answer size** of one representative answer (a 68-character caption, mixed 1-2 digit
   scores) in the served two-line format and in the JSON format used before, counted with the
   checkpoint's tokenizer *and* as Qwen2 pre-tokens (Qwen2's tokenizer never merges across its
   pre-tokenizer's pieces, so this is a lower bound for the real 151k-token vocabulary, and close
   to it for English words). ``forced`` = tokens the grammar fully determines (keys,
   separators): each is still one decode step of the whole batch with ``generate``.
2. **Grammar compile time** per vocabulary (cold; the server caches it per name list).
3. **Grammar mask cost per decode step at batch 64** with a vocabulary the size of Qwen2's
   (151,936 ids, synthetic: the real tokenizer cannot be downloaded here): filling 64 rows'
   masks (caption steps and score steps apart) and applying them to CPU logits.
4. **Served rate**: the real engine with the grammar on, the same shots analysed with each
   vocabulary: mean generated tokens per shot and shots/s.

Run as ``python scripts/bench_server.py --vocabulary [FILE]`` (any model options of that
script apply), or this file directly for the tiny checkpoint on CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_FILE = REPO_ROOT / "examples" / "trailer_attributes.yaml"
CAPTION = "A man in a dark coat walks slowly down a rain-soaked street at night."
QWEN2_VOCAB = 151_936
# Qwen2's pre-tokenizer (also in make_tiny_model.py): digits one by one, words with their space.
QWEN2_PRETOKENIZER = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def sample_scores(names: tuple[str, ...]) -> dict[str, int]:
    """Deterministic mixed scores: one- and two-digit values, like real answers."""
    return {n: (17 * i + 23) % 100 for i, n in enumerate(names)}


def _json_answer(names: tuple[str, ...]) -> tuple[str, str]:
    scores = sample_scores(names)
    full = json.dumps({"caption": CAPTION, **scores})
    return full, json.dumps({"caption": CAPTION})[:-1]


def _line_answer(names: tuple[str, ...]) -> tuple[str, str]:
    from qwen_server.engine.grammar import CAPTION_PREFIX, render_answer

    return render_answer(CAPTION, sample_scores(names)), CAPTION_PREFIX + CAPTION


def answer_sizes(tokenizer: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Tokens of one answer per format: total, score part, forced part (see module doc)."""
    import regex

    pre = regex.compile(QWEN2_PRETOKENIZER)
    digits = sum(len(str(v)) for v in sample_scores(names).values())  # free tokens: digits
    out: dict[str, Any] = {}
    for label, build in (("lines", _line_answer), ("json", _json_answer)):
        full, caption_part = build(names)
        for counter, count in (
            ("tokenizer", lambda t: len(tokenizer.encode(t, add_special_tokens=False))),
            ("qwen2_pretokens", lambda t: len(pre.findall(t))),
        ):
            total = count(full)
            scores = total - count(caption_part)
            out[f"{label}_{counter}"] = {
                "total": total,
                "scores": scores,
                "forced": scores - digits,
                "per_attribute": round(scores / len(names), 2),
            }
    return out


def synthetic_info(base_info: Any, size: int = QWEN2_VOCAB) -> Any:
    """A raw-text vocabulary of ``size`` ids: id 0 the stop token, ids 1-95 the printable ASCII
    characters and 96 the line break (``synthetic_ids`` spells any answer with them), the
    checkpoint's decoded tokens, then deterministic filler words."""
    import random

    import xgrammar as xgr

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    words = [
        w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w)
        for w in base_info.decoded_vocab
    ]
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz _="
    vocab = list(dict.fromkeys(["<stop>", *chars, *words]))
    while len(vocab) < size:
        vocab.append("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9))))
    vocab = vocab[:size]
    return xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=size, stop_token_ids=[0])


def synthetic_ids(text: str) -> list[int]:
    """``text`` in ``synthetic_info``'s vocabulary, one character a token."""
    return [96 if ch == "\n" else 1 + ord(ch) - 32 for ch in text]


def mask_step_cost(
    info: Any, names: tuple[str, ...], caption_max: int, batch: int, ids: list[int]
) -> dict[str, float]:
    """Mean ms per decode step for ``batch`` rows stepping through the answer spelled by
    ``ids``: filling the masks (xgrammar's multi-threaded batch fill, as the processor does for
    8+ rows), in the caption and in the score part, and applying them to CPU float32 logits.

    On a GPU the apply step is a device kernel; the fill is the CPU work each decode step adds.
    """
    import torch
    import xgrammar as xgr

    from qwen_server.engine.grammar import CAPTION_PREFIX, output_ebnf

    grammar = xgr.GrammarCompiler(info).compile_grammar(output_ebnf(caption_max, names))
    matchers = [xgr.GrammarMatcher(grammar) for _ in range(batch)]
    mask = xgr.allocate_token_bitmask(batch, info.vocab_size)
    logits = torch.zeros((batch, info.vocab_size), dtype=torch.float32)
    filler = xgr.BatchGrammarMatcher()
    rows = list(range(batch))
    fill: list[float] = []
    apply: list[float] = []
    for tok in ids:
        t0 = time.perf_counter()
        filler.batch_fill_next_token_bitmask(matchers, mask, rows)
        t1 = time.perf_counter()
        xgr.apply_token_bitmask_inplace(logits, mask, vocab_size=info.vocab_size)
        apply.append(time.perf_counter() - t1)
        fill.append(t1 - t0)
        for m in matchers:
            m.accept_token(tok)
    caption_steps = len(CAPTION_PREFIX) + len(CAPTION)  # one id per character
    return {
        "fill_caption_ms": round(1000.0 * statistics.mean(fill[3:caption_steps]), 3),
        "fill_scores_ms": round(1000.0 * statistics.mean(fill[caption_steps:]), 3),
        "apply_cpu_ms": round(1000.0 * statistics.mean(apply[3:]), 3),
    }


def compile_ms(info: Any, names: tuple[str, ...], caption_max: int) -> float:
    from qwen_server.engine.grammar import GrammarCache

    cache = GrammarCache(info, caption_max_chars=caption_max)
    cache.get(names)
    return cache.compile_ms[-1]


async def served_rates(engine: Any, shots: list[Any], vocabularies: dict[str, Any]) -> dict:
    """The same shots through the started engine once per vocabulary (grammar on)."""
    from bench_server import run_batched  # scripts/ is on sys.path when run as a script

    out = {}
    for label, vocab in vocabularies.items():
        for s in shots:
            s.vocabulary = vocab
        await run_batched(engine, shots[: max(1, len(shots) // 4)], 8)  # warm-up, untimed
        out[label] = await run_batched(engine, shots, 8)
    return out


def bench_vocabularies(
    engine: Any, shots: list[Any], attributes_file: Path, caption_max: int, batch: int = 64
) -> dict[str, Any]:
    """Every figure of the module doc for the six and the file's vocabulary (engine loaded with
    the grammar on, not started)."""
    from qwen_server.contract.vocabulary import DEFAULT_VOCABULARY, load_vocabulary_file
    from qwen_server.engine.grammar import tokenizer_info

    big = load_vocabulary_file(attributes_file)[0]
    vocabularies = {f"{len(DEFAULT_VOCABULARY)} attributes": DEFAULT_VOCABULARY}
    vocabularies[f"{len(big)} attributes"] = big
    preparer = engine._preparer  # the checkpoint's tokenizer, as loaded by the engine
    tokenizer = preparer.tokenizer
    stop = list(engine.generator(0).stop_token_ids)
    vocab_size = int(engine.generator(0).model.config.get_text_config().vocab_size)
    info = tokenizer_info(tokenizer, vocab_size=vocab_size, stop_token_ids=stop)
    qwen_sized = synthetic_info(info)
    result: dict[str, Any] = {"caption_max_chars": caption_max, "mask_batch": batch}
    for label, vocab in vocabularies.items():
        names = vocab.names
        text, _ = _line_answer(names)
        result[label] = {
            "answer": answer_sizes(tokenizer, names),
            "compile_ms": round(compile_ms(info, names, caption_max), 2),
            # Character by character: a step per character is the worst case for the fill.
            "mask_qwen2_vocab": mask_step_cost(
                qwen_sized, names, caption_max, batch, synthetic_ids(text)
            ),
        }

    async def run() -> dict:
        await engine.start()
        try:
            return await served_rates(engine, shots, vocabularies)
        finally:
            await engine.stop(timeout=60)

    for label, rate in asyncio.run(run()).items():
        result[label]["served"] = rate
    return result


def report(result: dict[str, Any]) -> list[str]:
    """The figures side by side, one line per vocabulary."""
    lines = []
    for label, r in result.items():
        if not isinstance(r, dict):
            continue
        a, s, m = r["answer"], r["served"], r["mask_qwen2_vocab"]
        lines.append(
            f"{label}: answer tokens lines/json = {a['lines_tokenizer']['total']}/"
            f"{a['json_tokenizer']['total']} (checkpoint tokenizer), "
            f"{a['lines_qwen2_pretokens']['total']}/{a['json_qwen2_pretokens']['total']} "
            f"(Qwen2 pre-tokens; score part {a['lines_qwen2_pretokens']['scores']}/"
            f"{a['json_qwen2_pretokens']['scores']}, forced {a['lines_qwen2_pretokens']['forced']}/"
            f"{a['json_qwen2_pretokens']['forced']}); grammar compile {r['compile_ms']:.1f} ms; "
            f"mask at batch {result['mask_batch']} (151,936 ids): fill {m['fill_caption_ms']:.2f} "
            f"ms/step in the caption, {m['fill_scores_ms']:.2f} in the scores, CPU apply "
            f"{m['apply_cpu_ms']:.1f}; served: "
            f"{s['shots_per_s']:.2f} shots/s, {s['mean_new_tokens']:.1f} new tokens/shot"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attributes_file", nargs="?", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args(argv)
    import bench_server  # scripts/ is on sys.path when run as a script

    return bench_server.main(["--vocabulary", str(args.attributes_file), "--device", "cpu"])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
