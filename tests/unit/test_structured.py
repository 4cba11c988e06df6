"""Structured output: the grammar always yields parseable JSON; the parser never raises."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import xgrammar as xgr

from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.engine.grammar import (
    GrammarLogitsProcessor,
    compile_output_grammar,
    output_ebnf,
    output_schema,
    worst_case_new_tokens,
)
from qwen_server.engine.output_parsing import FALLBACK_CAPTION, NEUTRAL_SCORE, parse_model_output

CAPTION_MAX = 30


def _answer(caption: str = "A man walks down a hall.", **scores: int) -> str:
    values = {a: scores.get(a, 50) for a in ATTRIBUTES}
    return json.dumps({"caption": caption, **values})


# --- parser ----------------------------------------------------------------------------------


def test_parse_valid_answer_scales_integers() -> None:
    parsed = parse_model_output(_answer(suspense=78, motion=0, darkness=100), CAPTION_MAX)
    assert parsed.complete and parsed.missing == []
    assert parsed.caption == "A man walks down a hall."
    assert parsed.scores["suspense"] == pytest.approx(0.78)
    assert parsed.scores["motion"] == 0.0 and parsed.scores["darkness"] == 1.0
    assert list(parsed.scores) == list(ATTRIBUTES)


def test_parse_accepts_fractions_and_clamps() -> None:
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
    parsed = parse_model_output(text, CAPTION_MAX)
    assert parsed.scores["suspense"] == pytest.approx(0.7)
    assert parsed.scores["darkness"] == 1.0
    assert parsed.scores["ambiguity"] == 0.0
    assert parsed.scores["emotional_tension"] == pytest.approx(0.4)
    assert parsed.scores["intensity"] == 1.0
    assert parsed.scores["motion"] == NEUTRAL_SCORE and parsed.missing == ["motion"]


def test_parse_truncated_answer_keeps_what_it_has() -> None:
    full = _answer("Rain on a window at night", suspense=10, darkness=90, ambiguity=20)
    cut = full[: full.index('"emotional_tension"') + 5]
    parsed = parse_model_output(cut, CAPTION_MAX)
    assert not parsed.complete
    assert parsed.caption == "Rain on a window at night"
    assert parsed.scores["darkness"] == pytest.approx(0.9)
    assert parsed.scores["intensity"] == NEUTRAL_SCORE
    assert "caption" not in parsed.missing and "intensity" in parsed.missing

    mid_caption = parse_model_output('{"caption": "A dark corr', CAPTION_MAX)
    assert mid_caption.caption == "A dark corr"
    assert set(mid_caption.missing) == set(ATTRIBUTES)


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "{", "}", "{}", "[1, 2]", "null", '{"caption": 5}', "\x00\xff", "{" * 500],
)
def test_parse_garbage_falls_back(text: str) -> None:
    parsed = parse_model_output(text, CAPTION_MAX)
    assert not parsed.complete
    assert parsed.caption == FALLBACK_CAPTION
    assert all(v == NEUTRAL_SCORE for v in parsed.scores.values())


def test_parse_never_raises_on_random_text() -> None:
    rng = random.Random(7)
    pieces = [
        '{"caption": "',
        '"',
        ", ",
        '"suspense": ',
        "1",
        "00",
        ".5",
        "e9",
        "}",
        "\\",
        "é",
        " ",
    ]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        parsed = parse_model_output(text, CAPTION_MAX)
        assert 0 < len(parsed.caption) <= CAPTION_MAX
        assert all(0.0 <= v <= 1.0 for v in parsed.scores.values())
    assert parse_model_output(None, CAPTION_MAX).caption == FALLBACK_CAPTION  # type: ignore[arg-type]


def test_parse_bounds_long_captions() -> None:
    parsed = parse_model_output(_answer("word " * 100), CAPTION_MAX)
    assert len(parsed.caption) <= CAPTION_MAX and "\n" not in parsed.caption


# --- grammar ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_grammar(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    vocab_size = len(tokenizer) + 70  # padded logits rows, like the real model
    grammar = compile_output_grammar(
        tokenizer, vocab_size=vocab_size, stop_token_ids=stop, caption_max_chars=CAPTION_MAX
    )
    return tokenizer, grammar, vocab_size, stop


def test_grammar_accepts_answers_and_rejects_violations(tiny_grammar) -> None:
    _, grammar, _, _ = tiny_grammar

    def accepts(text: str) -> bool:
        matcher = xgr.GrammarMatcher(grammar)
        return matcher.accept_string(text) and matcher.is_completed()

    assert accepts(_answer("A quiet street.", suspense=0, darkness=100))
    longest = _answer("x" * CAPTION_MAX, **dict.fromkeys(ATTRIBUTES, 100))
    assert accepts(longest)
    assert len(longest) + 1 == worst_case_new_tokens(CAPTION_MAX)
    assert not accepts(_answer("x" * (CAPTION_MAX + 1)))
    assert not accepts(_answer('say "hi"'))  # a quote needs an escape: not allowed
    assert not accepts(_answer("back\\slash"))
    assert not accepts(_answer(" leading space"))
    assert not accepts(_answer(suspense=101))
    assert not accepts(_answer(suspense=7).replace(": 7,", ": 07,"))
    assert not accepts(_answer().replace('"motion"', '"movement"'))


@pytest.mark.parametrize("caption_max", [200, 2000])
def test_grammar_compiles_for_long_captions(tiny_grammar, caption_max: int) -> None:
    tokenizer, _, vocab_size, stop = tiny_grammar
    grammar = compile_output_grammar(
        tokenizer, vocab_size=vocab_size, stop_token_ids=stop, caption_max_chars=caption_max
    )
    matcher = xgr.GrammarMatcher(grammar)
    assert matcher.accept_string(_answer("y" * caption_max)) and matcher.is_completed()


def test_schema_describes_the_grammar() -> None:
    schema = output_schema(CAPTION_MAX)
    assert schema["required"] == ["caption", *ATTRIBUTES]
    assert all(
        schema["properties"][a] == {"type": "integer", "minimum": 0, "maximum": 100}
        for a in ATTRIBUTES
    )
    assert f"{{0,{CAPTION_MAX - 1}}}" in schema["properties"]["caption"]["pattern"]
    assert f"{{0,{CAPTION_MAX - 1}}}" in output_ebnf(CAPTION_MAX)


def test_any_logits_give_a_complete_answer_within_the_bound(tiny_grammar) -> None:
    """Whatever the model prefers (here: random logits), the answer parses completely."""
    tokenizer, grammar, vocab_size, stop = tiny_grammar
    torch.manual_seed(0)
    batch = 6
    processor = GrammarLogitsProcessor(grammar)
    input_ids = torch.zeros((batch, 1), dtype=torch.long)
    finished = [False] * batch
    bound = worst_case_new_tokens(CAPTION_MAX)
    for _ in range(bound):
        logits = torch.randn(batch, vocab_size) * 5
        logits = processor(input_ids, logits)
        next_tokens = logits.argmax(dim=-1)
        for row in range(batch):
            if finished[row]:
                next_tokens[row] = stop[0]
            elif int(next_tokens[row]) in stop:
                finished[row] = True
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=1)
        if all(finished):
            break
    assert all(finished), "every row must reach the stop token within the worst-case bound"
    for row in range(batch):
        ids = input_ids[row, 1:].tolist()
        ids = ids[: ids.index(stop[0])]
        assert all(t < len(tokenizer) for t in ids)  # padded rows are never chosen
        parsed = parse_model_output(tokenizer.decode(ids), CAPTION_MAX)
        assert parsed.complete, tokenizer.decode(ids)


def test_rejected_token_forces_that_row_to_stop(tiny_grammar) -> None:
    tokenizer, grammar, vocab_size, stop = tiny_grammar
    processor = GrammarLogitsProcessor(grammar)
    input_ids = torch.zeros((2, 1), dtype=torch.long)
    processor(input_ids, torch.zeros(2, vocab_size))  # first step: answer must start with "{"
    bad = tokenizer.convert_tokens_to_ids("x")
    brace = tokenizer.encode("{", add_special_tokens=False)[0]
    input_ids = torch.tensor([[0, bad], [0, brace]])
    masked = processor(input_ids, torch.zeros(2, vocab_size))
    allowed = torch.isfinite(masked[0]).nonzero().flatten().tolist()
    assert allowed == stop
    healthy = torch.isfinite(masked[1]).nonzero().flatten().tolist()
    assert healthy and not set(healthy) & set(stop)  # the healthy row goes on: '"caption"...'
    assert tokenizer.decode(healthy[:1]).startswith('"')
