"""The trailer cut's documented rules on shots with chosen scores: ranking by the normalised
weighted score, no neighbours, one pick per film-time bucket (then the relaxed second pass),
clip bounds, trimming around the middle sample, the exact duration, the arc, determinism."""

from __future__ import annotations

from fractions import Fraction

import pytest

from client.trailer import arc
from client.trailer.selection import (
    NOT_NEEDED,
    PICKED,
    REJECTED,
    CutSettings,
    FrameBudget,
    Shot,
    score,
    select,
)

FPS = Fraction(25)


def film(lengths: list[int], darkness: list[float], fps_samples: int = 5) -> list[Shot]:
    """Consecutive shots of the given frame lengths, scored on darkness (and a constant)."""
    shots, at = [], 0
    for i, (n, d) in enumerate(zip(lengths, darkness, strict=True)):
        step = n / (fps_samples + 1)
        samples = tuple(at + int(step * (k + 1)) for k in range(fps_samples))
        shots.append(Shot(i + 1, at, at + n - 1, {"darkness": d, "motion": 0.5}, samples))
        at += n
    return shots


def picked_ids(selection) -> list[int]:
    return [c.candidate.shot.shot_id for c in selection.clips]


def test_score_is_the_normalised_weighted_sum_and_contributions_add_up() -> None:
    shot = Shot(1, 0, 99, {"darkness": 0.8, "motion": 0.2, "other": 1.0})
    value, parts = score(shot, {"darkness": 0.75, "motion": 0.25, "absent": 0.0})
    assert value == pytest.approx(0.75 * 0.8 + 0.25 * 0.2)
    assert parts == pytest.approx({"darkness": 0.6, "motion": 0.05, "absent": 0.0})
    assert sum(parts.values()) == pytest.approx(value)


def test_picks_follow_the_ranking_and_skip_neighbours() -> None:
    # Shots 3 and 4 score highest but are neighbours: 4 is refused; 1 (third best) shares the
    # first half of the film (bucket 1 of 2) with 3, so 6 (fourth best, second half) is taken.
    shots = film([100] * 6, [0.3, 0.1, 0.9, 0.8, 0.05, 0.2])
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=8, allow_adjacent=False), FPS)
    assert sel.buckets == 2
    assert picked_ids(sel) == [3, 6]
    by_id = {c.shot.shot_id: c for c in sel.ranking}
    assert by_id[4].status == REJECTED and "next to shot 3" in by_id[4].reason
    assert by_id[1].status == REJECTED and "bucket 1/2 holds shot 3" in by_id[1].reason
    assert by_id[3].status == PICKED and by_id[6].status == PICKED
    # --allow-adjacent lets the neighbour in (the buckets still spread the picks).
    loose = select(shots, {"darkness": 1.0}, CutSettings(duration=8, allow_adjacent=True), FPS)
    assert picked_ids(loose) == [3, 4]


def test_one_pick_per_film_time_bucket_spreads_the_cut() -> None:
    # The eight darkest shots all sit in the first half of the film; 10 s at 4 s clips is
    # 3 buckets (ceil(250 / 100)), so the first pass takes one shot from each third.
    dark = [0.99, 0.5, 0.97, 0.5, 0.95, 0.5, 0.93, 0.5, 0.91, 0.5]
    light = [0.1, 0.0, 0.2, 0.0, 0.15, 0.0, 0.3, 0.0, 0.05, 0.0]
    shots = film([100] * 20, dark + light)
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=10), FPS)
    assert sel.buckets == 3
    assert picked_ids(sel) == [1, 9, 17]  # best of each third (frames 0-666, 667-1333, ...)
    assert sorted({c.candidate.bucket for c in sel.clips}) == [0, 1, 2]
    rejected = {c.shot.shot_id: c.reason for c in sel.ranking if c.status == REJECTED}
    assert "bucket 1/3 holds shot 1" in rejected[3]


def test_second_pass_relaxes_the_bucket_rule_when_the_duration_is_not_filled() -> None:
    # Two buckets for 8 s; the shots are 2 s long, so four clips are needed.
    shots = film([50] * 8, [0.9, 0.1, 0.8, 0.1, 0.7, 0.1, 0.6, 0.1])
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=8), FPS)
    assert sel.buckets == 2 and sel.frames == 200
    assert picked_ids(sel) == [1, 5, 3, 7]
    assert [c.pass_number for c in sel.clips] == [1, 1, 2, 2]
    assert "second pass" in sel.clips[2].candidate.reason


def test_duration_is_exact_and_clips_respect_bounds_and_their_shots() -> None:
    lengths = [37, 260, 55, 180, 24, 90, 310, 66, 140, 75, 48, 200] * 2
    shots = film(lengths, [((i * 37) % 11) / 10 for i in range(len(lengths))])
    for fps in (Fraction(25), Fraction(30000, 1001), Fraction(24)):
        for duration in (3.0, 7.3, 12.04, 20.0):
            settings = CutSettings(duration=duration, min_clip=1.0, max_clip=3.0)
            sel = select(shots, {"darkness": 1.0}, settings, fps)
            budget = FrameBudget.of(settings, fps)
            assert sel.frames == budget.target == round(Fraction(duration) * fps)
            assert abs(float(sel.frames / fps) - duration) <= float(1 / fps)
            for clip in sel.clips:
                shot = clip.candidate.shot
                assert budget.min_clip <= clip.frames <= budget.max_clip
                assert shot.start_frame <= clip.source_in <= clip.source_out <= shot.end_frame
            assert not sel.warnings


def test_the_last_pick_absorbs_the_excess() -> None:
    shots = film([200] * 5, [0.9, 0.1, 0.8, 0.1, 0.7])
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=9.5), FPS)
    # 4 s + 4 s + 4 s would be 300 frames for 237.5 -> 238: the third pick gives up 62.
    assert [c.frames for c in sel.clips] == [100, 100, 38]
    assert picked_ids(sel) == [1, 3, 5]


def test_long_shot_is_trimmed_around_its_middle_sample() -> None:
    shot = Shot(1, 1000, 1999, {"darkness": 1.0}, (1100, 1300, 1420, 1700, 1900))
    assert shot.peak_frame == 1420
    sel = select([shot], {"darkness": 1.0}, CutSettings(duration=2, max_clip=2), FPS)
    (clip,) = sel.clips
    assert (clip.source_in, clip.frames) == (1420 - 25, 50)
    assert "trimmed to 50 of 1000 frames around frame 1420" in clip.candidate.reason
    # A peak near the shot's end: the window slides back inside the shot.
    late = Shot(2, 0, 99, {"darkness": 1.0}, (20, 40, 95, 97, 99))
    (clip,) = select([late], {"darkness": 1.0}, CutSettings(duration=2), FPS).clips
    assert (clip.source_in, clip.source_out) == (50, 99)
    # No samples: the shot's middle frame.
    assert Shot(3, 10, 20, {}).peak_frame == 15


def test_short_shots_are_refused_and_a_short_film_says_so() -> None:
    shots = film([20, 60, 10, 40], [1.0, 0.5, 0.9, 0.4])  # 20 and 10 frames: under 1 s
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=30), FPS)
    assert picked_ids(sel) == [2, 4] and sel.frames == 100
    reasons = {c.shot.shot_id: c.reason for c in sel.ranking}
    assert reasons[1] == reasons[3] == "shorter than --min-clip"
    assert len(sel.warnings) == 1 and "fill only 4.000 s of the 30.000 s" in sel.warnings[0]


def test_candidates_after_the_fill_are_marked_not_needed() -> None:
    shots = film([100] * 9, [0.9, 0.1, 0.8, 0.1, 0.7, 0.1, 0.6, 0.1, 0.5])
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=4), FPS)
    assert picked_ids(sel) == [1]
    assert {c.status for c in sel.ranking[1:]} == {NOT_NEEDED}


def test_arc_orders_opening_in_film_order_then_rising_build_and_peak() -> None:
    darkness = [0.30, 0.0, 0.10, 0.0, 0.90, 0.0, 0.50, 0.0, 0.20, 0.0, 0.70, 0.0, 0.60]
    shots = film([50] * 13, darkness)
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=14, max_clip=2), FPS)
    assert len(sel.clips) == 7
    placed = arc.arrange(sel.clips)
    assert arc.act_sizes(7) == (2, 2, 3)
    assert [p.act for p in placed] == ["opening"] * 2 + ["build"] * 2 + ["peak"] * 3
    ids = [p.clip.candidate.shot.shot_id for p in placed]
    # lowest two (0.10 shot 3, 0.20 shot 9) in film order; then 0.30, 0.50; then 0.60..0.90.
    assert ids == [3, 9, 1, 7, 13, 11, 5]
    scores = [p.clip.candidate.score for p in placed]
    assert scores[-1] == max(scores) and scores[2:] == sorted(scores[2:])
    assert [p.record_in for p in placed] == [50 * i for i in range(7)]
    points = arc.curve_points(placed)
    assert points == [(0, 0.2), (100, 0.35), (200, 0.75), (350, 1.0)]
    assert arc.target_level(points, 150) == pytest.approx(0.55)
    levels = arc.score_levels(placed)
    assert levels[0] == 0.0 and levels[-1] == 1.0


@pytest.mark.parametrize(("n", "sizes"), [(1, (0, 0, 1)), (2, (0, 1, 1)), (3, (1, 1, 1))])
def test_act_sizes_for_few_picks(n: int, sizes: tuple[int, int, int]) -> None:
    assert arc.act_sizes(n) == sizes


def test_same_input_same_selection() -> None:
    shots = film([90, 45, 130, 60, 75, 200, 33, 120], [0.4, 0.4, 0.4, 0.7, 0.7, 0.1, 0.9, 0.4])
    settings = CutSettings(duration=9, min_clip=1.2, max_clip=3.5)
    first = select(shots, {"darkness": 0.6, "motion": 0.4}, settings, FPS)
    again = select(list(reversed(shots)), {"darkness": 0.6, "motion": 0.4}, settings, FPS)
    assert first == again
    # Ties (shots 1, 2, 3, 8 score alike) go to the earlier shot.
    tied = [c.shot.shot_id for c in first.ranking if c.score == pytest.approx(0.44)]
    assert tied == [1, 2, 3, 8]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration": 0}, "--duration must be a number > 0"),
        ({"duration": 5, "min_clip": 3, "max_clip": 2}, "--min-clip (3 s) is longer"),
        ({"duration": 0.5}, "shorter than --min-clip"),
        ({"duration": 5, "max_clip": float("nan")}, "--max-clip must be a number > 0"),
    ],
)
def test_settings_refuse_impossible_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CutSettings(**kwargs)


def test_no_whole_frame_between_the_clip_bounds() -> None:
    settings = CutSettings(duration=5, min_clip=1.01, max_clip=1.02)
    with pytest.raises(ValueError, match="no whole number of frames"):
        FrameBudget.of(settings, FPS)


def test_a_duration_no_set_of_clips_can_make_exactly_drops_the_last_pick_and_says_so() -> None:
    # 1.2 s shots, clips of 1-4 s: two make 60 frames, three at least 75; 2.5 s is 62 frames.
    shots = film([30] * 9, [0.9, 0.0, 0.8, 0.0, 0.7, 0.0, 0.6, 0.0, 0.5])
    sel = select(shots, {"darkness": 1.0}, CutSettings(duration=2.5), FPS)
    # One bucket (62 frames < one 4 s clip): the second pass takes 3, then 5, which is dropped.
    assert sel.buckets == 1
    assert picked_ids(sel) == [1, 3] and sel.frames == 60
    assert "cannot make exactly 62 frames; shot 5 is left out" in sel.warnings[0]
    assert "fill only 2.400 s" in sel.warnings[1]
    dropped = next(c for c in sel.ranking if c.shot.shot_id == 5)
    assert dropped.status == REJECTED and dropped.reason.startswith("dropped")
