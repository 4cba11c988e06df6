"""The grammar processor's fast paths give the same tokens as the plain ones.

* the caption bound enforced beside an unbounded grammar (``caption_limit``) admits exactly what
  the bounded grammar admits, step by step, against xgrammar's own HF processor;
* CPU masking of the live rows only equals xgrammar's kernel on those rows;
* matchers and the bitmask are reused across calls;
* overlapping accept + fill with the forward pass gives byte-identical answers on the tiny model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor as XgrReference

from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.contract.vocabulary import (
    DEFAULT_VOCABULARY,
    AttributeSpec,
    Vocabulary,
    load_vocabulary_file,
)
from qwen_server.engine.grammar import (
    CAPTION_PREFIX,
    GrammarCache,
    output_ebnf,
    render_answer,
    tokenizer_info,
    worst_case_new_tokens,
)
from qwen_server.engine.grammar_masking import apply_bitmask_cpu
from qwen_server.engine.grammar_processor import GrammarLogitsProcessor
from qwen_server.engine.grammar_workspace import GrammarWorkspace
from qwen_server.engine.lifecycle import Engine

from .engine_fixtures import REPO_ROOT, make_shot, tiny_settings

CAPTION_MAX = 30
TRAILER = load_vocabulary_file(REPO_ROOT / "examples/trailer_attributes.yaml")[0]
ROWS = [ATTRIBUTES, ("humor", "suspense"), TRAILER.names, ATTRIBUTES, ("humor", "suspense")]


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    vocab_size = len(tokenizer) + 70  # padded logits rows, like the real model
    info = tokenizer_info(tokenizer, vocab_size=vocab_size, stop_token_ids=stop)
    cache = GrammarCache(info, caption_max_chars=CAPTION_MAX)
    compiler = xgr.GrammarCompiler(info)
    exact = {names: compiler.compile_grammar(output_ebnf(CAPTION_MAX, names)) for names in ROWS}
    return tokenizer, info, cache, exact, stop, vocab_size


def _long_token_bias(info, vocab_size: int) -> torch.Tensor:
    """Logit bias that prefers long tokens and avoids line breaks: captions run to the bound."""
    vocab = list(info.decoded_vocab) + [b""] * (vocab_size - len(info.decoded_vocab))
    return torch.tensor([3.0 * len(t) - (20.0 if b"\n" in t else 0.0) for t in vocab])


def _decode_loop(processor, rows: int, vocab_size: int, stop: list[int], bias, steps: int):
    """Greedy decoding over seeded random logits; finished rows get the stop token."""
    gen = torch.Generator().manual_seed(3)
    input_ids = torch.zeros((rows, 1), dtype=torch.long)
    finished = [False] * rows
    for _ in range(steps):
        logits = torch.randn(rows, vocab_size, generator=gen) * 2 + bias
        masked = processor(input_ids, logits)
        nxt = masked.argmax(dim=-1)
        for row in range(rows):
            if finished[row]:
                nxt[row] = stop[0]
            elif int(nxt[row]) in stop:
                finished[row] = True
        input_ids = torch.cat([input_ids, nxt[:, None]], dim=1)
        if all(finished):
            break
    return input_ids, finished


def test_caption_bound_beside_the_grammar_equals_the_bounded_grammar(setup) -> None:
    tokenizer, info, cache, exact, stop, vocab_size = setup
    bias = _long_token_bias(info, vocab_size)
    steps = max(worst_case_new_tokens(CAPTION_MAX, names) for names in ROWS)
    reference = XgrReference([exact[names] for names in ROWS])
    ref_ids, _ = _decode_loop(reference, len(ROWS), vocab_size, stop, bias, steps)
    ours = GrammarLogitsProcessor([cache.get(names) for names in ROWS])
    our_ids, finished = _decode_loop(ours, len(ROWS), vocab_size, stop, bias, steps)
    ours.close()
    assert all(finished)
    assert torch.equal(ref_ids, our_ids)
    captions = []
    for row in our_ids[:, 1:].tolist():
        text = tokenizer.decode(row[: row.index(stop[0])])
        captions.append(text.split("\n")[0].removeprefix(CAPTION_PREFIX))
    # The bias makes the bound bite: some caption is exactly as long as allowed, none longer.
    assert max(len(c) for c in captions) == CAPTION_MAX, captions


def test_serving_grammar_takes_the_longest_answer_and_not_one_more_character(setup) -> None:
    tokenizer, info, cache, exact, stop, vocab_size = setup
    names = ("humor", "suspense")
    for caption, fits in (("x" * CAPTION_MAX, True), ("x" * (CAPTION_MAX + 1), False)):
        text = render_answer(caption, dict.fromkeys(names, 100))
        tokens = tokenizer.encode(text, add_special_tokens=False) + stop
        processor = GrammarLogitsProcessor(cache.get(names))
        ids = torch.zeros((1, 1), dtype=torch.long)
        admitted = True
        for tok in tokens:
            masked = processor(ids, torch.zeros(1, vocab_size))
            if not torch.isfinite(masked[0, tok]):
                admitted = False
                break
            ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)
        processor.close()
        assert admitted == fits, text


def test_cpu_masking_equals_xgrammar_kernel() -> None:
    gen = torch.Generator().manual_seed(1)
    rows, vocab = 12, 32 * 200 + 7  # a vocabulary that does not fill its last word
    words = -(-vocab // 32)
    bitmask = torch.zeros((rows, words), dtype=torch.int32)
    for row in range(rows):
        if row % 3 == 0:  # dense: most tokens allowed
            bitmask[row] = torch.randint(-(2**31), 2**31 - 1, (words,), generator=gen).int()
        else:  # sparse: a few words with a few bits (bit 31 is the sign bit)
            for w in torch.randint(0, words, (row % 4 + 1,), generator=gen).tolist():
                bitmask[row, w] = (1 << (w % 31)) - (2**31 if w % 2 else 0)
    bitmask[4, -1] = -1  # bits past the vocabulary are ignored
    scores = torch.randn(rows, vocab, generator=gen)
    for subset in (list(range(rows)), [0, 2, 3, 7, 11], [5], []):
        expected, got = scores.clone(), scores.clone()
        if subset:
            xgr.apply_token_bitmask_inplace(expected, bitmask, vocab_size=vocab, indices=subset)
        apply_bitmask_cpu(got, bitmask, subset)
        assert torch.equal(expected, got), subset


def test_matchers_and_bitmask_are_reused_across_calls(setup) -> None:
    _, info, cache, _, stop, vocab_size = setup
    workspace = GrammarWorkspace(threads=2)
    bias = _long_token_bias(info, vocab_size)
    outputs, buffers = [], []
    for _ in range(3):
        processor = GrammarLogitsProcessor(
            [cache.get(names) for names in ROWS], workspace=workspace
        )
        ids, _ = _decode_loop(processor, len(ROWS), vocab_size, stop, bias, 120)
        buffers.append(workspace.bitmask(len(ROWS), vocab_size).data_ptr())
        processor.close()
        outputs.append(ids)
    assert workspace.matchers_built == len(ROWS), "built for the first call only"
    assert len(set(buffers)) == 1, "one bitmask for every call"
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    # A smaller batch is a slice of the same buffer.
    assert workspace.bitmask(2, vocab_size).data_ptr() == buffers[0]


def test_overlap_gives_byte_identical_answers_on_the_tiny_model(tiny_model_dir: Path) -> None:
    humor = Vocabulary((AttributeSpec("humor", "how funny the shot is"),))
    three = Vocabulary(tuple(AttributeSpec(n, n) for n in ("decay", "magic", "suspense")))
    engine = Engine(tiny_settings(tiny_model_dir))
    engine.load()
    vocabularies = [DEFAULT_VOCABULARY, three, humor, DEFAULT_VOCABULARY, humor]
    shots = []
    for i, vocabulary in enumerate(vocabularies):
        shot = make_shot(i, 2)
        shot.vocabulary = vocabulary
        shots.append(engine.prepare(shot))
    generator = engine.generator(0)
    workspace = generator.grammar_workspace
    results = {}
    for overlap in (False, True, False):  # the second plain run reuses pooled matchers
        generator.grammar_overlap = overlap
        before = workspace.overlapped_steps
        results.setdefault(overlap, []).append(generator.generate(shots))
        overlapped = workspace.overlapped_steps - before
        assert (overlapped > 0) == overlap
    plain, overlapped_run = results[False][0], results[True][0]
    assert [(r.text, r.new_tokens) for r in plain] == [
        (r.text, r.new_tokens) for r in overlapped_run
    ]
    assert results[False][1] == plain  # and reuse of matchers between calls changes nothing
    assert workspace.matchers_built <= len(shots) + 1  # + the warm-up shot's matcher
