"""The film context given to the chat model: table, summary, selection within the budget,
and the shot citations read back from an answer."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qwen_server.chat.citations import cited_shots
from qwen_server.chat.context import SYSTEM_INSTRUCTIONS, build_context, estimate_tokens
from qwen_server.chat.film_table import film_shots
from qwen_server.chat.selection import question_terms, rank_shots
from qwen_server.chat.timecode import timecode

ROW = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}-")
ATTRS = ("suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion")


def shot(
    shot_id: int,
    start: float,
    caption: str = "a person stands in a room",
    audio: str = "speech",
    **scores: float,
) -> dict[str, Any]:
    attrs = {a: 0.3 for a in ATTRS}
    attrs.update(scores)
    return {
        "shot_id": shot_id,
        "start_time": start,
        "end_time": start + 2.5,
        "caption": caption,
        "attributes": attrs,
        "audio_class": audio,
    }


def long_film(n: int = 1500) -> list[dict[str, Any]]:
    """A long film with known special shots: a storm (keyword), a peak of every attribute."""
    film = [shot(i, i * 2.5) for i in range(n)]
    film[700] = shot(700, 700 * 2.5, caption="lightning storm over the harbour at night")
    film[123] = shot(123, 123 * 2.5, suspense=0.99)
    film[456] = shot(456, 456 * 2.5, darkness=0.97)
    film[789] = shot(789, 789 * 2.5, ambiguity=0.96)
    film[1011] = shot(1011, 1011 * 2.5, emotional_tension=0.95)
    film[1213] = shot(1213, 1213 * 2.5, intensity=0.94)
    film[1415] = shot(1415, 1415 * 2.5, motion=0.93)
    return film


def test_timecode_format():
    assert timecode(0) == "00:00:00.000"
    assert timecode(3723.4567) == "01:02:03.457"
    assert timecode(59.9996) == "00:01:00.000"
    assert timecode(None) == "--:--:--.---"


def test_short_film_sends_every_shot_as_a_time_coded_row():
    film = [
        shot(2, 12.5, "a woman opens a creaking door", "music", suspense=0.876),
        shot(1, 0.0, "sunrise over a quiet village", "silence"),
    ]
    ctx = build_context(film, "What happens?", max_context_tokens=6000, title="Test Film")
    system = ctx.messages[0]["content"]
    assert ctx.messages[0]["role"] == "system" and system.startswith(SYSTEM_INSTRUCTIONS)
    assert ctx.messages[-1] == {"role": "user", "content": "What happens?"}
    assert ctx.shots_in_context == ctx.shots_total == 2
    assert "FILM: Test Film - 2 shots" in system
    rows = [line for line in system.splitlines() if line.startswith("00:")]
    # time order, HH:MM:SS.mmm start-end, id, six scores to 2 decimals, audio, caption
    assert rows == [
        "00:00:00.000-00:00:02.500 | 1 | 0.30 0.30 0.30 0.30 0.30 0.30 | silence | "
        "sunrise over a quiet village",
        "00:00:12.500-00:00:15.000 | 2 | 0.88 0.30 0.30 0.30 0.30 0.30 | music | "
        "a woman opens a creaking door",
    ]
    assert "cite" in SYSTEM_INSTRUCTIONS.lower() and "timecode" in SYSTEM_INSTRUCTIONS


def test_summary_has_mean_max_with_where_and_trend():
    film = [shot(i, i * 10.0, suspense=i / 9) for i in range(10)]
    system = build_context(film, "q", max_context_tokens=6000).messages[0]["content"]
    line = next(x for x in system.splitlines() if x.startswith("suspense |"))
    assert line.startswith("suspense | 0.50 | 1.00 (shot 9, 00:01:30.000) | ")
    assert "0.06 0.28 0.50 0.72 0.94 (rising, highest in part 5)" in line
    assert "audio: speech 100%" in system


def test_long_film_respects_the_budget_and_keeps_relevant_shots_and_peaks():
    film = long_film()
    budget = 6000
    ctx = build_context(film, "When is the storm at the harbour?", max_context_tokens=budget)
    assert ctx.shots_total == 1500
    assert 20 < ctx.shots_in_context < 1500
    assert ctx.estimated_tokens <= budget
    sent = sum(estimate_tokens(m["content"]) for m in ctx.messages)
    assert sent <= budget
    shown = set(ctx.shown_ids)
    assert 700 in shown  # the keyword match
    assert {123, 456, 789, 1011, 1213, 1415} <= shown  # every attribute's peak
    system = ctx.messages[0]["content"]
    assert f"{ctx.shots_in_context} of 1500 shots" in system
    # Rows are in time order whatever the selection order.
    ids = [int(line.split(" | ")[1]) for line in system.splitlines() if ROW.match(line)]
    assert ids == sorted(ids) and len(ids) == ctx.shots_in_context
    # Coverage: the selection spreads over the whole film, not just its start.
    assert min(ids) < 150 and max(ids) > 1350


def test_attribute_words_rank_shots_by_that_score():
    film = [shot(i, i * 3.0, darkness=i / 20) for i in range(20)]
    _, attrs = question_terms("Which is the darkest scene?")
    assert attrs == {"darkness": True}
    ranking = [s.shot_id for s in rank_shots("Which is the darkest scene?", film_shots(film))]
    assert ranking[0] == 19  # darkness is the only attribute that varies: its peak leads
    assert ranking[:5] == [19, 18, 17, 16, 15]  # then the darkest first
    assert sorted(ranking) == list(range(20))  # every shot once
    calm = question_terms("find the calmest, slowest moments")[1]
    assert calm == {"intensity": False, "motion": False}


def test_question_naming_a_shot_or_time_keeps_it_in_a_tight_budget():
    film = long_film()
    ctx = build_context(film, "What is in shot 1234?", max_context_tokens=1500)
    assert 1234 in ctx.shown_ids
    ctx = build_context(film, "What happens at 00:50:00?", max_context_tokens=1500)
    assert 1200 in ctx.shown_ids  # 3000 s / 2.5 s per shot


def test_history_is_trimmed_oldest_first_within_its_share():
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 2000}
        for i in range(10)
    ]
    ctx = build_context([shot(1, 0.0)], "and now?", history=history, max_context_tokens=6000)
    kept = ctx.messages[1:-1]
    assert 0 < len(kept) < 10
    assert kept[-1]["content"].startswith("turn 9")  # newest kept
    assert ctx.history_kept == len(kept)


def test_budget_too_small_for_rows_still_sends_the_summary():
    ctx = build_context(long_film(), "anything", max_context_tokens=500)
    # The summary keeps to its share (it drops the trend column first), so at most a row or
    # two fit beside it and the whole stays within the budget.
    assert ctx.shots_in_context <= 2
    assert ctx.estimated_tokens <= 500
    system = ctx.messages[0]["content"]
    assert "WHOLE-FILM SUMMARY" in system
    assert all(f"\n{a} | " in system for a in ATTRS)


def test_inline_results_with_local_field_names():
    # client shots.jsonl lines may say start/end instead of start_time/end_time
    shots = film_shots([{"shot_id": 4, "start": 1.5, "end": 2.0, "caption": "c"}])
    assert (shots[0].start, shots[0].end) == (1.5, 2.0)
    assert shots[0].scores == {}  # no scores: nothing made up
    assert "| 4 | - - - - - - | - | c" in shots[0].row(ATTRS)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The peak is shot 12 (shot 12, 00:00:30.000).", [12]),
        ("See shots 3, 5 and 7; also #9.", [3, 5, 7, 9]),
        ("Shots 4-6 build up.", [4, 5, 6]),
        ("At 00:00:10.000 the door opens.", [4]),
        ("Shot 999 does not exist; shot 2 does.", [2]),
        ("(shot 1, 00:00:02.500)", [1]),
        ("No citation here, 3 times.", []),
    ],
)
def test_cited_shots(answer: str, expected: list[int]):
    film = [shot(i, i * 2.5) for i in range(20)]
    assert cited_shots(answer, film) == expected


@pytest.mark.parametrize(
    "value", [1.8e305, 1.7976931348623157e308, -1.7976931348623157e308, -1.0, 1e7 + 1]
)
def test_timecode_never_raises_on_a_finite_float(value: float):
    """Stored legacy rows may hold absurd times; formatting them must not overflow."""
    assert timecode(value) == "--:--:--.---"
    assert timecode(1e7) == "2777:46:40.000"  # the largest time still shown


def test_context_survives_absurd_legacy_times():
    """Huge, negative and mixed times, durations that overflow when added, and ints beyond a
    float: the context is built, the absurd times are shown as unknown, sane shots stay timed."""
    huge = 1.7976931348623157e308
    results = [
        shot(0, 0.0),
        {**shot(1, 1.8e305), "end_time": huge},
        {**shot(2, -huge), "end_time": 1.8e305},
        {"shot_id": 3, "start_time": 5.0, "duration": huge, "attributes": {"suspense": 0.9}},
        {"shot_id": 4, "start_time": 10**400, "end_time": 2.0, "caption": "int overflow"},
    ]
    ctx = build_context(results, "when is shot 1?", max_context_tokens=6000)
    system = ctx.messages[0]["content"]
    assert ctx.shots_total == ctx.shots_in_context == 5
    assert "--:--:--.------:--:--.--- | 1 |" in system
    assert "00:00:00.000-00:00:02.500 | 0 |" in system
    assert "inf" not in system and "e+30" not in system
    assert cited_shots("shot 1 and 00:00:01.000", results) == [1, 0]


def test_audio_column_shows_the_measured_speech_share():
    """Issue 15: a result whose audio cues carry speech_ratio shows it in the audio column (from
    10 %), so the chat can point at dialogue; results without it read as before."""
    film = [
        {**shot(1, 0.0, audio="speech"), "audio": {"audio_class": "speech", "speech_ratio": 0.8}},
        {**shot(2, 2.5, audio="music"), "audio": {"speech_ratio": 0.15, "loudness": 0.6}},
        {**shot(3, 5.0, audio="music"), "audio": {"speech_ratio": 0.05}},
        {**shot(4, 7.5, audio="ambience"), "audio": {"speech_ratio": None}},
        {**shot(5, 10.0, audio="silence"), "audio": "not cues"},
        {**shot(6, 12.5, audio="ambience"), "audio": {"speech_ratio": 7}},  # not a share: left out
    ]
    audio = [s.row(ATTRS).split(" | ")[-2] for s in film_shots(film)]
    assert audio == [
        "speech (speech 80%)",
        "music (speech 15%)",
        "music",
        "ambience",
        "silence",
        "ambience",
    ]


def test_inline_chat_results_carry_the_speech_share():
    from pydantic import ValidationError

    from qwen_server.contract.chat import ChatRequest

    row = {"shot_id": 1, "caption": "x", "audio": {"speech_ratio": 0.5, "summary": "dialogue"}}
    req = ChatRequest.model_validate({"question": "q", "results": [row]})
    assert req.results is not None and req.results[0].audio is not None
    assert film_shots([req.results[0].model_dump()])[0].speech_ratio == 0.5
    with pytest.raises(ValidationError, match="speech_ratio"):
        ChatRequest.model_validate(
            {"question": "q", "results": [{**row, "audio": {"speech_ratio": 1.5}}]}
        )
