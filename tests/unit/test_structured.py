"""Structured output: the grammar of any vocabulary always yields a complete answer; the parser
never raises; grammars are compiled once per name list; a batch may mix vocabularies."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import torch
import xgrammar as xgr

from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.contract.vocabulary import load_vocabulary_file
from qwen_server.engine.grammar import (
    GrammarCache,
    output_ebnf,
    render_answer,
    tokenizer_info,
    worst_case_new_tokens,
)
from qwen_server.engine.grammar_processor import GrammarLogitsProcessor
from qwen_server.engine.output_parsing import FALLBACK_CAPTION, NEUTRAL_SCORE, parse_model_output

CAPTION_MAX = 30
REPO = Path(__file__).resolve().parents[2]
TRAILER_NAMES = load_vocabulary_file(REPO / "examples/trailer_attributes.yaml")[0].names


def _answer(caption: str = "A man walks down a hall.", **scores: int) -> str:
    return render_answer(caption, {a: scores.get(a, 50) for a in ATTRIBUTES})


def _parse(text: str, names: tuple[str, ...] = ATTRIBUTES):
    return parse_model_output(text, CAPTION_MAX, names)


# --- parser ----------------------------------------------------------------------------------


def test_parse_valid_answer_scales_integers() -> None:
    parsed = _parse(_answer(suspense=78, motion=0, darkness=100))
    assert parsed.complete and parsed.missing == []
    assert parsed.caption == "A man walks down a hall."
    assert parsed.scores["suspense"] == pytest.approx(0.78)
    assert parsed.scores["motion"] == 0.0 and parsed.scores["darkness"] == 1.0
    assert list(parsed.scores) == list(ATTRIBUTES)


def test_parse_any_vocabulary_keeps_exactly_the_requested_names_in_order() -> None:
    scores = {n: (i * 7) % 101 for i, n in enumerate(TRAILER_NAMES)}
    parsed = _parse(render_answer("A duel at noon.", scores), TRAILER_NAMES)
    assert parsed.complete and list(parsed.scores) == list(TRAILER_NAMES)
    assert parsed.scores == {n: pytest.approx(v / 100) for n, v in scores.items()}
    # Asked for three of them in another order: exactly those three, in that order.
    subset = ("humor", "suspense", "decay")
    again = _parse(render_answer("x", scores), subset)
    assert list(again.scores) == list(subset) and again.complete


def test_parse_score_words_inside_the_caption_do_not_count() -> None:
    text = "caption: Sign: intensity=9 humor=1\nintensity=40 humor=0"
    parsed = _parse(text, ("intensity", "humor"))
    assert parsed.scores == {"intensity": 0.4, "humor": 0.0}
    assert parsed.caption == "Sign: intensity=9 humor=1"


def test_parse_reads_json_from_unconstrained_models_and_clamps() -> None:
    text = json.dumps(
        {
            "caption": "x",
            "suspense": 0.7,
            "darkness": 250,
            "ambiguity": -3,
            "emotional_tension": "40",
            "intensity": 1.0,
            "motion": True,
        }
    )
    parsed = _parse(text)
    assert parsed.scores["suspense"] == pytest.approx(0.7)
    assert parsed.scores["darkness"] == 1.0
    assert parsed.scores["ambiguity"] == 0.0
    assert parsed.scores["emotional_tension"] == pytest.approx(0.4)
    assert parsed.scores["intensity"] == 1.0
    assert parsed.scores["motion"] == NEUTRAL_SCORE and parsed.missing == ["motion"]
    # Truncated JSON: read as far as it goes.
    cut = _parse('{"caption": "Rain at night", "suspense": 10, "darkness": 90, "ambi')
    assert cut.caption == "Rain at night" and cut.scores["darkness"] == pytest.approx(0.9)
    assert set(cut.missing) == {"ambiguity", "emotional_tension", "intensity", "motion"}


def test_parse_truncated_answer_keeps_what_it_has() -> None:
    full = _answer("Rain on a window at night", suspense=10, darkness=90, ambiguity=20)
    cut = full[: full.index("emotional_tension") + 5]
    parsed = _parse(cut)
    assert not parsed.complete
    assert parsed.caption == "Rain on a window at night"
    assert parsed.scores["darkness"] == pytest.approx(0.9)
    assert parsed.scores["intensity"] == NEUTRAL_SCORE
    assert "caption" not in parsed.missing and "intensity" in parsed.missing

    mid_caption = _parse("caption: A dark corr")
    assert mid_caption.caption == "A dark corr"
    assert set(mid_caption.missing) == set(ATTRIBUTES)


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "{", "}", "{}", "[1, 2]", "null", '{"caption": 5}', "\x00\xff", "{" * 500],
)
def test_parse_garbage_falls_back(text: str) -> None:
    parsed = _parse(text)
    assert not parsed.complete
    assert parsed.caption == FALLBACK_CAPTION
    assert all(v == NEUTRAL_SCORE for v in parsed.scores.values())


def test_parse_never_raises_on_random_text() -> None:
    rng = random.Random(7)
    pieces = ["caption: ", "\n", " ", "suspense=", "humor=", '"', "1", "00", ".5", "e9", "\\", "é"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        parsed = _parse(text, ("suspense", "humor"))
        assert 0 < len(parsed.caption) <= CAPTION_MAX
        assert list(parsed.scores) == ["suspense", "humor"]
        assert all(0.0 <= v <= 1.0 for v in parsed.scores.values())
    assert _parse(None).caption == FALLBACK_CAPTION  # type: ignore[arg-type]


def test_parse_bounds_long_captions() -> None:
    parsed = _parse(_answer("word " * 100))
    assert len(parsed.caption) <= CAPTION_MAX and "\n" not in parsed.caption


# --- grammar ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_grammars(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    vocab_size = len(tokenizer) + 70  # padded logits rows, like the real model
    info = tokenizer_info(tokenizer, vocab_size=vocab_size, stop_token_ids=stop)
    cache = GrammarCache(info, caption_max_chars=CAPTION_MAX, max_entries=3)
    return tokenizer, cache, vocab_size, stop, info


def _accepts(grammar: object, text: str) -> bool:
    matcher = xgr.GrammarMatcher(grammar)
    return matcher.accept_string(text) and matcher.is_completed()


def _exact(info, names) -> object:
    """The grammar that bounds the caption itself (the language; serving enforces the bound
    beside an unbounded caption, see test_grammar_processor)."""
    return xgr.GrammarCompiler(info).compile_grammar(output_ebnf(CAPTION_MAX, names))


def test_grammar_accepts_answers_and_rejects_violations(tiny_grammars) -> None:
    _, _, _, _, info = tiny_grammars
    grammar = _exact(info, ATTRIBUTES)
    assert _accepts(grammar, _answer("A quiet street.", suspense=0, darkness=100))
    assert _accepts(grammar, _answer('say "hi" \\ back'))  # quotes need no escapes now
    longest = _answer("x" * CAPTION_MAX, **dict.fromkeys(ATTRIBUTES, 100))
    assert _accepts(grammar, longest)
    assert len(longest) + 1 == worst_case_new_tokens(CAPTION_MAX, ATTRIBUTES)
    assert not _accepts(grammar, _answer("x" * (CAPTION_MAX + 1)))
    assert not _accepts(grammar, _answer(" leading space"))
    assert not _accepts(grammar, _answer("two\nlines"))
    assert not _accepts(grammar, _answer(suspense=101))
    assert not _accepts(grammar, _answer(suspense=7).replace("suspense=7 ", "suspense=07 "))
    assert not _accepts(grammar, _answer().replace("motion=", "movement="))
    assert not _accepts(grammar, _answer().replace(" motion=50", ""))  # every name, in order


def test_grammar_for_38_attributes_accepts_exactly_that_answer(tiny_grammars) -> None:
    _, _, _, _, info = tiny_grammars
    grammar = _exact(info, TRAILER_NAMES)
    scores = dict.fromkeys(TRAILER_NAMES, 100)
    assert _accepts(grammar, render_answer("x" * CAPTION_MAX, scores))
    assert not _accepts(grammar, _answer())  # the six are not this vocabulary's answer
    assert worst_case_new_tokens(CAPTION_MAX, TRAILER_NAMES) == (
        len(render_answer("x" * CAPTION_MAX, scores)) + 1
    )


@pytest.mark.parametrize("caption_max", [200, 2000])
def test_grammar_compiles_for_long_captions(tiny_grammars, caption_max: int) -> None:
    _, _, _, _, info = tiny_grammars
    grammar = xgr.GrammarCompiler(info).compile_grammar(output_ebnf(caption_max, ATTRIBUTES))
    assert _accepts(grammar, _answer("y" * caption_max))


def test_grammar_cache_compiles_once_per_name_list_and_evicts_lru(tiny_grammars) -> None:
    _, _, _, _, info = tiny_grammars
    cache = GrammarCache(info, caption_max_chars=CAPTION_MAX, max_entries=2)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(ATTRIBUTES))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.compiles == 1 and len({id(g) for g in got}) == 1  # 8 callers, one compile
    cache.get(("humor",))
    cache.get(ATTRIBUTES)  # ATTRIBUTES is now the most recent
    cache.get(("decay", "magic"))  # evicts ("humor",)
    assert len(cache) == 2 and cache.compiles == 3
    cache.get(ATTRIBUTES)
    assert cache.compiles == 3
    cache.get(("humor",))
    assert cache.compiles == 4
    assert len(cache.compile_ms) == 4 and all(ms > 0 for ms in cache.compile_ms)


def _run_random(processor, batch: int, vocab_size: int, stop: list[int], bound: int):
    torch.manual_seed(0)
    input_ids = torch.zeros((batch, 1), dtype=torch.long)
    finished = [False] * batch
    for _ in range(bound):
        logits = processor(input_ids, torch.randn(batch, vocab_size) * 5)
        next_tokens = logits.argmax(dim=-1)
        for row in range(batch):
            if finished[row]:
                next_tokens[row] = stop[0]
            elif int(next_tokens[row]) in stop:
                finished[row] = True
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=1)
        if all(finished):
            break
    return input_ids, finished


def test_any_logits_give_a_complete_answer_within_the_bound(tiny_grammars) -> None:
    """Whatever the model prefers (here: random logits), every row of a batch that mixes two
    vocabularies parses completely, each with its own names."""
    tokenizer, cache, vocab_size, stop, _ = tiny_grammars
    small = ("humor", "suspense")
    rows = [ATTRIBUTES, small, ATTRIBUTES, TRAILER_NAMES, small, ATTRIBUTES]
    processor = GrammarLogitsProcessor([cache.get(names) for names in rows])
    bound = max(worst_case_new_tokens(CAPTION_MAX, names) for names in rows)
    input_ids, finished = _run_random(processor, len(rows), vocab_size, stop, bound)
    assert all(finished), "every row must reach the stop token within the worst-case bound"
    for row, names in enumerate(rows):
        ids = input_ids[row, 1:].tolist()
        ids = ids[: ids.index(stop[0])]
        assert len(ids) < worst_case_new_tokens(CAPTION_MAX, names)
        assert all(t < len(tokenizer) for t in ids)  # padded rows are never chosen
        parsed = parse_model_output(tokenizer.decode(ids), CAPTION_MAX, names)
        assert parsed.complete, tokenizer.decode(ids)
        assert list(parsed.scores) == list(names)


def test_rejected_token_forces_that_row_to_stop(tiny_grammars) -> None:
    tokenizer, cache, vocab_size, stop, _ = tiny_grammars
    processor = GrammarLogitsProcessor(cache.get(ATTRIBUTES))
    input_ids = torch.zeros((2, 1), dtype=torch.long)
    processor(input_ids, torch.zeros(2, vocab_size))  # first step: the answer starts "caption: "
    bad = tokenizer.convert_tokens_to_ids("x")
    good = tokenizer.encode("c", add_special_tokens=False)[0]
    input_ids = torch.tensor([[0, bad], [0, good]])
    masked = processor(input_ids, torch.zeros(2, vocab_size))
    allowed = torch.isfinite(masked[0]).nonzero().flatten().tolist()
    assert allowed == stop
    healthy = torch.isfinite(masked[1]).nonzero().flatten().tolist()
    assert healthy and not set(healthy) & set(stop)  # the healthy row goes on: "aption: ..."
    assert tokenizer.decode(healthy[:1])[0] == "a"
