"""``TransitionFinder`` fed synthetic statistics (no decoding), ``BoundaryPlanner``'s decisions
and the summary's transition lists.

The pictures are seeded random textures, smoothed like a shrunk frame and moving a little
every frame (a still picture would make any test trivial); each test builds the statistics a
decoded film of that content would give (mean, standard deviation, 32x18 thumbnail).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import pytest

from client.media.boundaries import BoundaryPlanner
from client.media.dissolves import THUMB_SIZE, half_widths
from client.media.transitions import TransitionFinder, TransitionGroup
from client.run_summary import film_cues, film_transitions

FPS = Fraction(25)
W, H = 128, 72


def texture(seed: int, level: float = 120.0, contrast: float = 60.0) -> np.ndarray:
    """A smooth random picture twice the frame's size (so it can move)."""
    rng = np.random.default_rng(seed)
    raw = rng.random((2 * H // 24, 2 * W // 24)).astype(np.float32)  # blobs of ~24 px
    big = cv2.resize(raw, (2 * W, 2 * H), interpolation=cv2.INTER_CUBIC)
    big = (big - big.mean()) / (big.std() + 1e-6)
    return np.clip(level + contrast * big, 0, 255).astype(np.float32)


def view(tex: np.ndarray, k: int, speed: float = 0.5) -> np.ndarray:
    """Frame ``k`` of a picture panning slowly right and down."""
    off = int(round(k * speed)) % H
    return tex[off : off + H, off : off + W]


def feed(finder: TransitionFinder, frames: list[np.ndarray]) -> list[TransitionGroup]:
    groups: list[TransitionGroup] = []
    for n, frame in enumerate(frames):
        thumb = cv2.resize(frame, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        groups += finder.process_stats(n, float(frame.mean()), float(frame.std()), thumb)
    return groups + finder.finish()


def finder() -> TransitionFinder:
    return TransitionFinder(FPS, black_luma=16.0, black_min_frames=5, dissolve_max_seconds=1.0)


def shot(seed: int, frames: int, start: int = 0, **kw: float) -> list[np.ndarray]:
    tex = texture(seed, **kw)
    return [view(tex, start + k) for k in range(frames)]


def dissolve(a: int, b: int, n: int, before: int = 50, after: int = 50) -> list[np.ndarray]:
    ta, tb = texture(a), texture(b)
    frames = [view(ta, k) for k in range(before)]
    for k in range(1, n + 1):
        alpha = k / (n + 1)
        frames.append((1 - alpha) * view(ta, before + k - 1) + alpha * view(tb, k - 1 - n))
    return frames + [view(tb, k) for k in range(after)]


def kinds(group: TransitionGroup) -> list[str]:
    return [s.kind for s in group.segments]


@pytest.mark.parametrize("n", [8, 16, 24])
def test_a_dissolve_is_one_group_with_its_middle_as_boundary(n: int) -> None:
    groups = feed(finder(), dissolve(1, 2, n))
    assert len(groups) == 1 and kinds(groups[0]) == ["dissolve"]
    g = groups[0]
    true = (50, 50 + n - 1)
    overlap = min(g.end, true[1]) - max(g.start, true[0]) + 1
    assert overlap / (max(g.end, true[1]) - min(g.start, true[0]) + 1) >= 0.7
    assert g.boundary is not None and abs(g.boundary - (50 + n // 2)) <= 2


def test_fade_out_black_fade_in_is_one_group_cut_in_the_middle_of_the_black() -> None:
    a, b = shot(3, 50), shot(4, 50)
    frames = a + [a[-1] * (1 - k / 13) for k in range(1, 13)] + [np.zeros((H, W), np.float32)] * 10
    frames += [b[0] * (k / 13) for k in range(1, 13)] + b
    groups = feed(finder(), frames)
    assert len(groups) == 1
    g = groups[0]
    assert kinds(g) == ["fade_out", "black", "fade_in"]
    fade_out, black, fade_in = g.segments
    assert abs(fade_out.start - 50) <= 1 and abs(fade_in.end - 83) <= 1
    assert 60 <= black.start <= 62 and 71 <= black.end <= 73  # the darkest fade frames count
    assert g.boundary == black.start + (black.end - black.start + 1) // 2


def test_black_between_hard_cuts_is_a_cue_and_a_short_dark_flash_is_nothing() -> None:
    dark = [np.full((H, W), 3.0, np.float32)]
    groups = feed(finder(), shot(5, 40) + dark * 8 + shot(6, 40))
    assert [kinds(g) for g in groups] == [["black"]]
    assert (groups[0].start, groups[0].end, groups[0].boundary) == (40, 47, 44)
    assert feed(finder(), shot(5, 40) + dark * 2 + shot(6, 40)) == []


def test_a_fade_in_at_the_film_start_has_no_boundary() -> None:
    b = shot(7, 50)
    frames = [np.zeros((H, W), np.float32)] * 6 + [b[0] * (k / 11) for k in range(1, 11)] + b
    groups = feed(finder(), frames)
    assert [kinds(g) for g in groups] == [["black", "fade_in"]]
    assert groups[0].boundary is None and groups[0].start == 0


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(shot(8, 60) + shot(9, 60), id="hard cut"),
        pytest.param([view(texture(10), 3 * k, speed=1.0) for k in range(120)], id="fast pan"),
        pytest.param(
            [
                view(texture(11), k) * (1 + 0.5 * min(1.0, max(0.0, (k - 40) / 20)))
                for k in range(100)
            ],
            id="one picture brightening",
        ),
    ],
)
def test_cuts_motion_and_brightness_changes_are_not_transitions(frames: list[np.ndarray]) -> None:
    assert feed(finder(), frames) == []


def test_a_title_fading_in_over_a_picture_is_not_a_dissolve() -> None:
    tex = texture(12)
    frames = []
    for k in range(100):
        frame = view(tex, k).copy()
        alpha = min(1.0, max(0.0, (k - 40) / 20))
        frame[20:40, 30:90] = (1 - alpha) * frame[20:40, 30:90] + alpha * 250.0
        frames.append(frame)
    assert feed(finder(), frames) == []


def test_the_same_statistics_give_the_same_groups() -> None:
    frames = dissolve(13, 14, 12) + shot(15, 30)
    assert feed(finder(), frames) == feed(finder(), frames)


def test_half_widths_grow_to_the_longest() -> None:
    assert half_widths(12) == [3, 4, 5, 7, 10, 12]
    assert half_widths(3) == [3]


def _plan(frames: list[np.ndarray], cuts: list[int]) -> list[int]:
    """Run finder + planner as the decode pass does (frames held back ``lookahead``); returns
    the frames where the planner starts a shot."""
    tf = finder()
    planner = BoundaryPlanner(tf, FPS)
    planner.add_cuts(cuts)
    starts: list[int] = []
    front = 0

    def commit(n: int) -> None:
        if planner.starts_shot(n):
            starts.append(n)
        planner.committed(n, n in starts)

    for n, frame in enumerate(frames):
        thumb = cv2.resize(frame, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        planner.frame_time(n, n / 25)
        planner.add_groups(tf.process_stats(n, float(frame.mean()), float(frame.std()), thumb))
        while n - front >= tf.lookahead:
            commit(front)
            front += 1
    planner.add_groups(tf.finish())
    while front < len(frames):
        commit(front)
        front += 1
    return starts


def test_detector_cuts_inside_a_dissolve_become_its_one_boundary() -> None:
    frames = dissolve(16, 17, 16, after=40) + shot(18, 50)
    # Two false cuts inside the dissolve (50..65), one hard cut after it (at 106).
    first, hard = _plan(frames, [55, 61, 106])
    assert 54 <= first <= 62 and first not in (55, 61)  # its middle, not a detector cut
    assert hard == 106  # a hard cut outside it stays where the detector put it


def test_a_dissolve_the_detector_missed_still_gets_a_boundary() -> None:
    (boundary,) = _plan(dissolve(19, 20, 12), [])
    assert 53 <= boundary <= 58  # the middle part of 50..61


def test_without_a_finder_the_planner_passes_the_cuts_through() -> None:
    planner = BoundaryPlanner(None, FPS)
    planner.add_cuts([3, 7])
    assert [n for n in range(10) if planner.starts_shot(n)] == [3, 7]


def _mark(kind: str, first: int, last: int) -> dict[str, object]:
    return {
        "kind": kind,
        "start_frame": first,
        "end_frame": last,
        "start_time": first / 25,
        "end_time": (last + 1) / 25,
    }


def test_summary_lists_each_transition_once_with_its_shots_and_joins_split_black() -> None:
    records: list[dict[str, Any]] = [
        {
            "shot_id": 1,
            "start_frame": 0,
            "end_frame": 59,
            "transition_in": None,
            "transition_out": _mark("dissolve", 50, 69),
            "technical_cues": [],
        },
        {
            "shot_id": 2,
            "start_frame": 60,
            "end_frame": 135,
            "transition_in": _mark("dissolve", 50, 69),
            "transition_out": _mark("fade_out", 119, 129),
            "technical_cues": [_mark("black", 130, 135)],
        },
        {
            "shot_id": 3,
            "start_frame": 136,
            "end_frame": 200,
            "transition_in": _mark("fade_in", 143, 154),
            "transition_out": None,
            "technical_cues": [_mark("black", 136, 142)],
        },
    ]
    found = film_transitions(records)
    assert [(t["kind"], t["from_shot"], t["to_shot"]) for t in found] == [
        ("dissolve", 1, 2),
        ("fade_out", 2, 3),
        ("fade_in", 2, 3),
    ]
    cues = film_cues(records)
    assert [(c["start_frame"], c["end_frame"]) for c in cues] == [(130, 142)]
    assert cues[0]["end_time"] == pytest.approx(143 / 25)
