"""The mask cache gives, at every step of every row, exactly the mask a fresh fill gives.

Random trajectories (tokens sampled from the allowed mask, biased towards the tokens that make
states hard: line breaks that end the caption inside a token, quotes and backslashes, digits,
long tokens that make the caption bound bite, the stop token; a few rows are fed a token the
grammar rejects, non-ASCII ones included) run through two processors side by side: one with the
workspace's mask cache, one filling every row with xgrammar every step (and the caption bound
applied by ``CaptionState``). Both bitmasks must be equal bit for bit at every step, for the 6-
and the 38-attribute vocabularies and batches mixing them.

Vocabularies: one built here (every byte plus tokens that straddle the caption's end, the
prefix, the keys and the scores), so it runs anywhere; and Qwen2's real 151,643-token
vocabulary when its BPE ranks (``qwen.tiktoken``) are found: ``$QWEN_TIKTOKEN``, else the test
environment's ``share/qwen.tiktoken`` (``scripts/test.sh`` takes it out of the dashscope wheel),
else ``/tmp/qwen.tiktoken``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xgrammar as xgr

from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.contract.vocabulary import load_vocabulary_file
from qwen_server.engine.grammar import GrammarCache, tokenizer_info, worst_case_new_tokens
from qwen_server.engine.grammar_processor import GrammarLogitsProcessor
from qwen_server.engine.grammar_states import score_classes
from qwen_server.engine.grammar_workspace import GrammarWorkspace

from .engine_fixtures import REPO_ROOT

TRAILER = load_vocabulary_file(REPO_ROOT / "examples/trailer_attributes.yaml")[0].names


def _find_qwen_tiktoken() -> Path | None:
    """Where Qwen2's BPE ranks are, by the order in the module doc (None: nowhere)."""
    named = os.environ.get("QWEN_TIKTOKEN")
    places = [Path(named)] if named else []
    places += [Path(sys.prefix) / "share" / "qwen.tiktoken", Path("/tmp/qwen.tiktoken")]
    return next((p for p in places if p.is_file() and p.stat().st_size), None)


QWEN_TIKTOKEN = _find_qwen_tiktoken()
STOP = b"<|im_end|>"


def _built_vocabulary() -> list[bytes]:
    """Every single byte, plus multi-byte tokens at every kind of state boundary."""
    tokens = {bytes([b]) for b in range(256)}
    for name in (*ATTRIBUTES, *TRAILER):
        key = name.encode()
        tokens |= {b"\n" + key, b" " + key, key + b"=", b" " + key + b"=", b"\n" + key + b"="}
        tokens |= {key[:3], key[3:], b"." + b"\n" + key[:4], b"0 " + key, b"5 " + key[:2]}
        tokens |= {b"=" + str(v).encode() for v in (0, 1, 5, 10, 50, 100)}
    tokens |= {str(v).encode() for v in range(101)} | {b"00", b"000", b"1000", b"5 ", b"0 "}
    tokens |= {b"caption", b"caption:", b": ", b"caption: A", b" A", b"cap", b"tion: "}
    tokens |= {b'"', b'\\"', b"\\", b"\\n", b'say \\"hi\\"', b'"quoted"', b"\t", b"\r\n"}
    tokens |= {"é".encode(), "—".encode(), " café".encode(), "ü\n".encode(), b"\xe2\x80"}
    tokens |= {b"A man walks down a dark corridor toward", b" " * 16, b"x" * 33, b"end.\n"}
    tokens |= {b".\n", b"!\n", b"s.\nsuspense=7", b"\n\n", b" \n"}
    return sorted(tokens) + [STOP]


def _qwen_info():
    spec = importlib.util.spec_from_file_location(
        "bench_grammar", REPO_ROOT / "scripts" / "bench_grammar.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tok = bench.qwen2_tokenizer(QWEN_TIKTOKEN)
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    return tokenizer_info(tok, vocab_size=bench.QWEN2_LOGITS, stop_token_ids=[stop])


@pytest.fixture(scope="module", params=["built", "qwen2"])
def vocabulary(request):
    """(xgrammar tokenizer info, caption bound) for one vocabulary."""
    if request.param == "qwen2":
        if QWEN_TIKTOKEN is None:
            pytest.skip(
                "Qwen2's vocabulary (qwen.tiktoken) not found: set QWEN_TIKTOKEN, or run "
                "scripts/test.sh, which takes it out of the dashscope wheel"
            )
        return _qwen_info(), 60
    vocab = _built_vocabulary()
    info = xgr.TokenizerInfo(
        vocab, xgr.VocabType.RAW, vocab_size=len(vocab) + 37, stop_token_ids=[len(vocab) - 1]
    )
    return info, 24


def _allowed(bitmask: torch.Tensor, row: int, vocab_size: int) -> np.ndarray:
    bits = np.unpackbits(bitmask[row].numpy().view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:vocab_size])


class _Picker:
    """Chooses each row's next token from its allowed set, biased towards hard states."""

    def __init__(self, info, rng: random.Random) -> None:
        vocab = list(info.decoded_vocab)
        self.rng = rng
        self.stops = set(info.stop_token_ids)
        self.kinds = {
            "newline": {i for i, t in enumerate(vocab) if b"\n" in t},
            "escape": {i for i, t in enumerate(vocab) if b'"' in t or b"\\" in t},
            "digits": {i for i, t in enumerate(vocab) if t and any(48 <= c <= 57 for c in t)},
            "long": {i for i, t in enumerate(vocab) if len(t) >= 12},
        }
        self.foreign = [i for i, t in enumerate(vocab) if t and any(c >= 128 for c in t)]

    def pick(self, allowed: np.ndarray, foreign: bool) -> int:
        rng = self.rng
        if foreign:
            return rng.choice(self.foreign)  # a token the grammar rejects: the row is stopped
        ids = allowed.tolist()
        roll = rng.random()
        for kind, share in (("newline", 0.2), ("escape", 0.1), ("digits", 0.15), ("long", 0.1)):
            if roll < share:
                pool = [i for i in ids if i in self.kinds[kind]]
                if pool:
                    return rng.choice(pool)
            roll -= share
        stops = [i for i in ids if i in self.stops]
        if stops and rng.random() < 0.3:
            return stops[0]
        return rng.choice(ids)


def _replay(cached_ws, fresh_ws, grammars, picker, vocab_size, steps, foreign_rows, stop):
    """One batch of random trajectories; asserts the two bitmasks at every step."""
    rows = len(grammars)
    ours = GrammarLogitsProcessor(grammars, workspace=cached_ws)
    fresh = GrammarLogitsProcessor(grammars, workspace=fresh_ws)
    ids = torch.zeros((rows, 1), dtype=torch.long)
    finished = [False] * rows
    foreign_at = {row: picker.rng.randrange(1, 40) for row in foreign_rows}
    compared = 0
    for step in range(steps):
        ours.prepare(ids)
        fresh.prepare(ids)
        assert ours.masked_rows == fresh.masked_rows, step
        masked = fresh.masked_rows
        assert ours.bitmask is not None and fresh.bitmask is not None
        for row in masked:
            assert torch.equal(ours.bitmask[row], fresh.bitmask[row]), (step, row)
        compared += len(masked)
        nxt = []
        for row in range(rows):
            if finished[row]:
                nxt.append(stop)
                continue
            token = picker.pick(
                _allowed(fresh.bitmask, row, vocab_size), foreign_at.get(row) == step
            )
            finished[row] = token == stop
            nxt.append(token)
        if all(finished):
            break
        ids = torch.cat([ids, torch.tensor(nxt)[:, None]], dim=1)
    ours.close()
    fresh.close()
    assert all(finished), "every row ends within the worst-case token count"
    return compared


@pytest.mark.parametrize("cap", [2048, 8])  # the default, and a cap small enough to evict
def test_cached_masks_equal_fresh_fills_at_every_step(vocabulary, cap: int) -> None:
    info, caption_max = vocabulary
    stop = int(info.stop_token_ids[0])
    cache = GrammarCache(info, caption_max_chars=caption_max)
    cached_ws = GrammarWorkspace(threads=2, mask_cache_entries=cap)
    fresh_ws = GrammarWorkspace(threads=2, mask_cache_entries=0)
    picker = _Picker(info, random.Random(11 + cap))
    six, many = cache.get(ATTRIBUTES), cache.get(TRAILER)
    batches = [[six] * 12, [many] * 12, [six, many] * 6, [many] * 12, [six] * 12, [many, six] * 6]
    steps = worst_case_new_tokens(caption_max, TRAILER) + 2
    compared = 0
    for i, grammars in enumerate(batches):
        foreign_rows = [i % len(grammars), (i * 5 + 3) % len(grammars)]
        compared += _replay(
            cached_ws, fresh_ws, grammars, picker, int(info.vocab_size), steps, foreign_rows, stop
        )
    stats = cached_ws.mask_cache.stats()
    assert compared > 1000
    assert stats["mask_cache_hits"] > 0 and stats["mask_cache_fills"] > 0
    assert stats["mask_cache_entries"] <= cap
    if cap == 8:
        assert stats["mask_cache_evictions"] > 0
    cached_ws.close()
    fresh_ws.close()


def test_score_states_are_grouped_by_what_may_follow() -> None:
    classes = score_classes()
    assert classes[b"1"] != classes[b"2"]  # "1" may become "100"
    assert classes[b"2"] == classes[b"9"]
    assert classes[b"35"] == classes[b"78"] == classes[b"11"]
    assert classes[b"0"] == classes[b"100"] == classes[b"35"]  # complete: only what follows
    assert len({classes[b""], classes[b"1"], classes[b"2"], classes[b"10"], classes[b"0"]}) == 5
    assert b"101" not in classes and b"00" not in classes
