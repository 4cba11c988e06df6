"""Dissolves, fades and black in real encoded films (``tests.film_factory`` joins) through the
single decode pass: one shot per picture, typed transitions, black cues, samples outside the
transitions; and hard-cut films giving the very shots they gave without transition detection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from client.media.probe import probe
from client.media.scan import ShotScanner
from client.options import DetectionOptions, ExtractOptions, TimeRange
from client.run_summary import film_cues, film_transitions
from tests.film_factory import FilmTruth, TransitionTruth, make_film, standard_shots
from tests.film_joins import score_transitions
from tests.transition_films import joined_film

# Every kind of join but the cycle's last two (the benchmark's 36-shot film has them all).
JOIN_COUNT = 8

Joined = tuple[FilmTruth, list[dict[str, Any]]]


def scan(path: Path, **detection: Any) -> list[dict[str, Any]]:
    options = ExtractOptions(detection=DetectionOptions(**detection))
    return [
        {**s.shot.as_record(), "samples": [c.frame_no for c in s.samples]}
        for s in ShotScanner(probe(path), options)
    ]


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Joined:
    truth = joined_film(tmp_path_factory.mktemp("joins") / "joins.mp4", JOIN_COUNT + 1)
    return truth, scan(truth.path)


def test_every_picture_is_one_shot_cut_inside_its_transition(joined: Joined) -> None:
    truth, records = joined
    assert len(records) == len(truth.shots)
    for k, rec in enumerate(records[1:]):
        own_last = truth.shot_ranges[k][1]
        next_first = truth.shot_ranges[k + 1][0]
        # The boundary lies in the frames between the two pictures (a hard cut: exactly).
        assert own_last < rec["start_frame"] <= next_first, (k, rec["start_frame"])


def test_transitions_and_black_are_found_with_their_kinds(joined: Joined) -> None:
    truth, records = joined
    found = [
        TransitionTruth(t["kind"], t["start_frame"], t["end_frame"])
        for t in film_transitions(records)
        if t["kind"] != "cut"
    ]
    found += [
        TransitionTruth("black", c["start_frame"], c["end_frame"]) for c in film_cues(records)
    ]
    gradual = [t for t in truth.transitions if t.kind != "cut"]
    result = score_transitions(gradual, found)
    assert result["f1"] >= 0.9 and result["kind_accuracy"] >= 0.9, result
    cuts = [t for t in film_transitions(records) if t["kind"] == "cut"]
    hard = [t.first for t in truth.transitions if t.kind == "cut"]
    assert all(any(c["start_frame"] == h for c in cuts) for h in hard)


def test_shot_fields_follow_the_spec(joined: Joined) -> None:
    truth, records = joined
    assert records[0]["transition_in"] is None and records[-1]["transition_out"] is None
    for a, b in zip(records, records[1:], strict=False):
        out, into = a["transition_out"], b["transition_in"]
        if out["kind"] in ("cut", "dissolve") and into["kind"] == out["kind"] == "dissolve":
            assert out == into  # one transition between the two shots
        if out["kind"] == "fade_out" and into["kind"] == "fade_in":
            assert out["end_frame"] < into["start_frame"]
        if into["kind"] == "cut":
            assert into["start_frame"] == into["end_frame"]
            assert into["start_time"] == into["end_time"]
    for rec in records:
        first, last = rec["in_frame"], rec["out_frame"]
        assert rec["start_frame"] <= first <= last <= rec["end_frame"]
        assert rec["in_time"] == pytest.approx(first / 25)
        assert rec["out_time"] == pytest.approx((last + 1) / 25)
        # The model never sees a dissolve's mixed frames or black.
        assert all(first <= n <= last for n in rec["samples"]) and len(rec["samples"]) == 5
        for cue in rec["technical_cues"]:
            assert cue["kind"] == "black"
            assert rec["start_frame"] <= cue["start_frame"] <= cue["end_frame"] <= rec["end_frame"]


def test_the_picture_frames_of_each_shot_are_its_usable_frames(joined: Joined) -> None:
    truth, records = joined
    for (first, last), rec in zip(truth.shot_ranges, records, strict=True):
        # Within two frames: the darkest fade frames count as black, a dissolve's faintest
        # mix frames as picture.
        assert abs(rec["in_frame"] - first) <= 2 and abs(rec["out_frame"] - last) <= 2


def test_the_same_film_gives_the_same_shots_every_run(joined: Joined) -> None:
    truth, records = joined
    assert scan(truth.path) == records


def test_a_hard_cut_film_gives_the_same_shots_with_and_without_transitions(
    tmp_path: Path,
) -> None:
    truth = make_film(tmp_path / "cuts.mp4", standard_shots())
    with_t = scan(truth.path)
    without = scan(truth.path, transitions=False)
    keys = ("shot_id", "start_frame", "end_frame", "start_time", "end_time", "samples")
    assert [[r[k] for k in keys] for r in with_t] == [[r[k] for k in keys] for r in without]
    assert [(r["start_frame"], r["end_frame"]) for r in with_t] == list(truth.shot_ranges)
    for rec in with_t:
        assert (rec["in_frame"], rec["out_frame"]) == (rec["start_frame"], rec["end_frame"])
        assert rec["technical_cues"] == []
    assert without[0]["technical_cues"] is None  # not looked for
    inner = [r["transition_in"]["kind"] for r in with_t[1:]]
    assert inner == ["cut"] * (len(with_t) - 1)
    assert with_t[0]["transition_in"] is None and with_t[-1]["transition_out"] is None


def test_a_time_range_keeps_the_whole_film_shots_and_transitions(joined: Joined) -> None:
    truth, records = joined
    options = ExtractOptions(range=TimeRange(4.0, 12.0))
    clipped = [s.shot.as_record() for s in ShotScanner(probe(truth.path), options)]
    whole = {r["shot_id"]: r for r in records}
    for rec in clipped:
        full = whole[rec["shot_id"]]
        if (rec["start_frame"], rec["end_frame"]) == (full["start_frame"], full["end_frame"]):
            for key in ("transition_in", "transition_out", "in_frame", "out_frame"):
                assert rec[key] == full[key], key
    assert clipped[0]["transition_in"] is None  # the range starts inside a shot
