"""The chat with any attribute vocabulary (issue 10): a 38-attribute film, a film mixing the v1
six with the 38, the columns a question gets, the summary's share of the budget, and the inline
shot contract. Real results dicts through the real code; nothing mocked."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from pydantic import ValidationError

from qwen_server.chat.context import SUMMARY_SHARE, build_context, estimate_tokens
from qwen_server.chat.film_table import (
    MAX_COLUMNS,
    film_attributes,
    film_shots,
    short_names,
    table_columns,
)
from qwen_server.chat.question import question_terms
from qwen_server.chat.selection import rank_shots
from qwen_server.chat.summary import film_summary
from qwen_server.contract.chat import ChatRequest
from qwen_server.contract.constants import ATTRIBUTES

# The trailer pipeline's vocabulary (examples/trailer_attributes.yaml), in its order.
TRAILER_TEXT = (
    "suspense ambiguity emotional_intensity darkness intensity fear motion impact futuristic"
    " technology wonder scale humor lightheartedness timing absurdity intimacy warmth beauty"
    " authenticity awkwardness deadpan mystery surrealism visual_abstraction unconventional magic"
    " adventure landscape ruggedness sacrifice patriotism rhythm performance triumph rebellion"
    " decay romantic_tension"
)
TRAILER = TRAILER_TEXT.split()
assert len(TRAILER) == 38
ROW = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}-")
CAPTIONS = (
    "a man walks through a crowded market at dusk carrying a heavy bag while vendors shout",
    "two women talk at a kitchen table over cold coffee",
    "a car speeds along a coastal road at night with its headlights blazing",
    "close-up of a child's face lit by a flickering television",
)


def score(i: int, k: int) -> float:
    """A deterministic score in [0.10, 0.60) for shot i, attribute k."""
    return round(0.1 + ((i * 37 + k * 101) % 500) / 1000, 3)


def result(i: int, names: list[str] | tuple[str, ...], **scores: float) -> dict[str, Any]:
    attrs = {a: score(i, k) for k, a in enumerate(names)}
    attrs.update(scores)
    return {
        "shot_id": i,
        "start_time": i * 2.7,
        "end_time": i * 2.7 + 2.7,
        "caption": CAPTIONS[i % len(CAPTIONS)],
        "attributes": attrs,
        "audio_class": ("speech", "music", "silence")[i % 3],
    }


def trailer_film(n: int) -> list[dict[str, Any]]:
    """n shots on the 38 attributes; shot 137 is the funniest, then 42, then 250 (if present)."""
    film = [result(i, TRAILER) for i in range(n)]
    for sid, humor in ((137, 0.99), (42, 0.95), (250, 0.9)):
        if sid < n:
            film[sid] = result(sid, TRAILER, humor=humor)
    return film


def header_and_legend(system: str) -> tuple[list[str], dict[str, str]]:
    """The table's score columns (short names) and the legend's short -> full names."""
    lines = system.splitlines()
    header = next(line for line in lines if line.startswith("time | shot | "))
    legend = next(line for line in lines if line.startswith("time = start-end"))
    cols = header.split(" | ")[2].split() if header.count(" | ") == 4 else []
    pairs = dict(p.split("=") for p in legend.split(": ", 1)[1].split(";")[0].split())
    return cols, pairs


# --- a 38-attribute film ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "question", ["Which shots are funniest?", "Where is the humor highest?", "any humour?"]
)
def test_a_question_about_humor_gets_the_humor_column_and_the_funniest_shots(question: str):
    film = trailer_film(300)
    _, asked = question_terms(question, TRAILER)
    assert asked == {"humor": True}
    ctx = build_context(film, question, max_context_tokens=6000)
    system = ctx.messages[0]["content"]
    cols, legend = header_and_legend(system)
    assert legend["humo"] == "humor" and "humo" in cols
    assert len(cols) <= MAX_COLUMNS and set(cols) == set(legend)
    assert len(cols) == 7  # humor and the six defaults
    assert "31 more attributes not shown as columns" in system
    row = next(line for line in system.splitlines() if ROW.match(line) and " | 137 | " in line)
    assert row.split(" | ")[2].split()[cols.index("humo")] == "0.99"

    ranking = [s.shot_id for s in rank_shots(question, film_shots(film))]
    assert ranking[0] == 137  # the asked attribute's peak leads
    # Then the other columns' peaks, then the relevance picks, the funniest first.
    assert ranking.index(42) < ranking.index(250) <= MAX_COLUMNS + 1
    assert sorted(ranking) == list(range(300))


def test_38_attributes_x_2000_shots_stay_within_the_budget():
    film = trailer_film(2000)
    budget = 6000
    for question in ("Which shots are funniest?", "What happens in this film?"):
        ctx = build_context(film, question, max_context_tokens=budget)
        sent = sum(estimate_tokens(m["content"]) for m in ctx.messages)
        assert sent <= ctx.estimated_tokens <= budget
        assert ctx.shots_total == 2000 and 80 <= ctx.shots_in_context < 2000
        system = ctx.messages[0]["content"]
        # The summary names every attribute, with its trend (38 lines fit the default budget).
        for attr in TRAILER:
            assert re.search(
                rf"^{attr} \| 0\.\d\d \| .* \(\w+, highest in part \d\)$", system, re.M
            )
        summary = system[system.index("\nFILM") : system.index("\nSHOTS (")]
        assert estimate_tokens(summary) <= SUMMARY_SHARE * budget
        ids = [int(line.split(" | ")[1]) for line in system.splitlines() if ROW.match(line)]
        assert ids == sorted(ids) and len(ids) == ctx.shots_in_context
        assert min(ids) < 200 and max(ids) > 1800  # coverage of the whole film
    funny = build_context(film, "Which shots are funniest?", max_context_tokens=budget)
    assert {137, 42, 250} <= set(funny.shown_ids)


def test_default_columns_without_a_named_attribute():
    attrs = film_attributes(film_shots(trailer_film(3)))
    assert attrs == TRAILER  # first-seen order
    # The v1 attributes the film has (5 of the 6), topped up to six, in the film's order.
    assert table_columns({}, attrs) == [
        "suspense",
        "ambiguity",
        "emotional_intensity",
        "darkness",
        "intensity",
        "motion",
    ]
    # A film with none of the v1 six: its first six.
    other = [a for a in TRAILER if a not in ATTRIBUTES]
    assert table_columns({}, other) == other[:6]
    # A v1 film keeps its six whatever is asked.
    assert table_columns({"motion": False}, list(ATTRIBUTES)) == list(ATTRIBUTES)
    # A question naming many attributes: at most MAX_COLUMNS, the named ones.
    many = "humor warmth beauty intimacy patriotism decay magic rebellion triumph scale wonder"
    _, asked = question_terms(many, TRAILER)
    cols = table_columns(asked, TRAILER)
    assert len(asked) == 11 and cols == [a for a in TRAILER if a in list(asked)[:MAX_COLUMNS]]


def test_short_names_are_unique_and_keep_the_v1_names():
    names = short_names([*ATTRIBUTES, *TRAILER, "humo", "humor_x", "a", "a_b"])
    assert len(set(names.values())) == len(names)
    assert [names[a] for a in ATTRIBUTES] == ["sus", "dark", "amb", "tens", "int", "mot"]
    assert names["romantic_tension"] == "romt" and names["humor"] == "humo"
    assert names["humo"] != "humo" and names["a"] == "a"
    assert all(len(s) <= 8 for s in names.values())


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("where is the romantic tension?", {"romantic_tension": True}),
        ("romantic_tension peaks", {"romantic_tension": True}),
        ("the least funny shots", {"humor": False}),
        ("lighthearted, absurd moments", {"lightheartedness": True, "absurdity": True}),
        ("show emotional intensity", {"emotional_intensity": True}),
        ("what time is it in shot 4?", {}),  # "time" is a stopword: not "timing"
        ("scary and dark", {"suspense": True, "fear": True, "darkness": True}),
    ],
)
def test_question_names_attributes_by_name_words_and_stems(question: str, expected: dict):
    assert question_terms(question, TRAILER)[1] == expected


# --- a film mixing vocabularies --------------------------------------------------------------


def test_mixed_vocabulary_film_shows_dashes_for_missing_scores():
    film = [result(i, ATTRIBUTES) for i in range(10)]
    film += [result(i, TRAILER) for i in range(10, 20)]
    film[15] = result(15, TRAILER, humor=0.97)
    ctx = build_context(film, "which shots are funniest?", max_context_tokens=6000)
    system = ctx.messages[0]["content"]
    assert ctx.shots_in_context == 20
    cols, legend = header_and_legend(system)
    assert cols == ["sus", "dark", "amb", "tens", "int", "mot", "humo"]
    rows = {
        int(r.split(" | ")[1]): r.split(" | ")[2].split()
        for r in system.splitlines()
        if ROW.match(r)
    }
    assert rows[3][cols.index("humo")] == "-"  # a v1 shot has no humor score
    assert rows[12][cols.index("tens")] == "-"  # the 38 have no emotional_tension
    assert rows[15][cols.index("humo")] == "0.97"
    assert all(v != "-" for v in rows[3][:6]) and len(rows[12]) == len(cols)
    # The summary covers the union, each over the shots scored on it.
    assert "emotional_tension (10 of 20 shots) | " in system
    assert "humor (10 of 20 shots) | " in system and "\nsuspense | " in system
    assert "all 39 attributes" in system


# --- the summary's share of the budget -------------------------------------------------------


def test_summary_drops_trends_then_attributes_not_asked_about_to_fit():
    shots = film_shots(trailer_film(200))
    full = film_summary(shots)
    lines = [x for x in full.splitlines() if x.split(" | ")[0] in TRAILER]
    assert len(lines) == 38 and all("highest in part" in x for x in lines)

    limit = len(full) * 2 // 3
    short = film_summary(shots, asked={"humor": True}, max_chars=limit)
    assert len(short) <= limit
    humor = next(x for x in short.splitlines() if x.startswith("humor | "))
    assert "highest in part" in humor  # the asked attribute keeps its trend
    assert "trend by part (for humor only)" in short
    others = [x for x in short.splitlines() if x.split(" | ")[0] in TRAILER and x != humor]
    assert len(others) == 37 and not any("highest in part" in x for x in others)

    tiny = film_summary(shots, asked={"humor": True}, max_chars=1200)
    assert len(tiny) <= 1200
    assert "humor | " in tiny and "highest in part" in tiny
    assert re.search(r"\(\d+ more attributes not summarised, to fit the budget", tiny)


def test_very_many_attributes_across_shots_stay_within_the_budget():
    """Each shot with 64 attributes of its own: the union is huge, the context is not."""
    film = [
        {
            "shot_id": i,
            "start_time": i * 2.0,
            "caption": "a hall",
            "attributes": {f"attr_{(i * 64 + k) % 3000}": 0.5 for k in range(63)}
            | {"humor": i / 500},
        }
        for i in range(500)
    ]
    for budget in (1500, 6000):
        ctx = build_context(film, "where is humor highest?", max_context_tokens=budget)
        assert ctx.estimated_tokens <= budget
        assert "not summarised" in ctx.messages[0]["content"]
    assert 499 in ctx.shown_ids  # the humor peak


# --- inline shots ----------------------------------------------------------------------------


def _request(attributes: dict[str, Any]) -> str:
    return json.dumps({"question": "q", "results": [{"shot_id": 1, "attributes": attributes}]})


def test_inline_shots_take_any_vocabulary_and_the_six_still():
    req = ChatRequest.model_validate_json(_request({a: 0.5 for a in TRAILER}))
    assert req.results is not None
    assert req.results[0].model_dump()["attributes"] == {a: 0.5 for a in TRAILER}
    six = ChatRequest.model_validate_json(_request({"suspense": 1, "motion": 0.25}))
    assert six.results is not None and six.results[0].attributes.suspense == 1.0
    assert six.results[0].attributes.scores() == {"suspense": 1.0, "motion": 0.25}
    partial = ChatRequest.model_validate_json(_request({"humor": None}))  # not scored
    assert partial.results is not None and partial.results[0].attributes.scores() == {"humor": None}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"Humor": 0.5}, "attributes.Humor\n.*invalid attribute name 'Humor'"),
        ({"romantic tension": 0.5}, "attributes.romantic tension\n.*invalid attribute name"),
        ({"x" * 41: 0.5}, "invalid attribute name"),
        ({"humor": 1.5}, "attributes.humor\n.*less than or equal to 1"),
        ({"humor": -0.1}, "attributes.humor\n.*greater than or equal to 0"),
        ({"humor": "0.5"}, "attributes.humor\n.*valid number"),
        ({"humor": True}, "attributes.humor\n.*valid number"),
        ({f"a{i}": 0.1 for i in range(65)}, "65 attributes in one shot \\(at most 64\\)"),
    ],
)
def test_bad_inline_attributes_are_refused_naming_the_attribute(attributes, message):
    with pytest.raises(ValidationError, match=message):
        ChatRequest.model_validate_json(_request(attributes))


def test_non_finite_inline_scores_are_refused():
    with pytest.raises(ValidationError, match="attributes.humor\n.*finite"):
        ChatRequest.model_validate(
            {"question": "q", "results": [{"shot_id": 1, "attributes": {"humor": math.inf}}]}
        )
