"""The minimum shot length holds for every shot, the last one included (``ShotAssembler``).

PySceneDetect keeps ``min_scene_len`` between cuts only; a noisy cut a few frames before the end
of the film must not leave a tiny last shot. Frames are plain markers here: no decoding.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from client.media.assembly import ScannedShot, ShotAssembler
from client.media.frames import Candidate, ShotReservoir, sample_positions

FPS = Fraction(25)


def _run(
    frames: int,
    cuts: list[int],
    min_frames: int,
    capacity: int = 40,
    count: int = 5,
) -> tuple[list[ScannedShot], dict[int, int]]:
    """Commit frames 0..frames-1 with the cuts known on time; returns the shots and, for each
    shot id, the frame whose commit released it (-1: released by ``finish``)."""
    asm = ShotAssembler(FPS, capacity, count, min_frames)
    asm.add_cuts(cuts)
    shots: list[ScannedShot] = []
    released: dict[int, int] = {}
    for n in range(frames):
        for s in asm.commit(n, n / 25, f"frame{n}"):
            shots.append(s)
            released[s.shot.shot_id] = n
    last = asm.finish()
    if last is not None:
        shots.append(last)
        released[last.shot.shot_id] = -1
    return shots, released


def _ranges(shots: list[ScannedShot]) -> list[tuple[int, int]]:
    return [(s.shot.start_frame, s.shot.end_frame) for s in shots]


def test_a_last_shot_shorter_than_the_minimum_is_merged_into_the_previous_one() -> None:
    # The case of the bug: a noise cut at 57 in a 60-frame film, minimum 15 frames (0.6 s).
    shots, released = _run(60, [30, 57], min_frames=15)
    assert _ranges(shots) == [(0, 29), (30, 59)]
    assert [s.shot.shot_id for s in shots] == [1, 2]
    merged = shots[1]
    # Samples spread evenly over the merged shot, not just over 30..56.
    assert [c.frame_no for c in merged.samples] == sample_positions(30, 59, 5)
    assert merged.stream_start == pytest.approx(30 / 25)
    assert merged.stream_end == pytest.approx(60 / 25)
    # Shot 1 streams out as soon as shot 2 has lasted the minimum (frames 30..44).
    assert released == {1: 44, 2: -1}


def test_a_last_shot_of_exactly_the_minimum_keeps_its_cut() -> None:
    shots, _ = _run(60, [45], min_frames=15)
    assert _ranges(shots) == [(0, 44), (45, 59)]
    shots, _ = _run(60, [46], min_frames=15)
    assert _ranges(shots) == [(0, 59)]


def test_a_film_shorter_than_the_minimum_is_one_shot() -> None:
    shots, _ = _run(10, [4], min_frames=15)
    assert _ranges(shots) == [(0, 9)]
    assert [c.frame_no for c in shots[0].samples] == sample_positions(0, 9, 5)


def test_cuts_closer_than_the_minimum_to_the_shot_start_are_dropped() -> None:
    # First shot too short, then a middle shot too short: every shot keeps >= 15 frames.
    shots, _ = _run(100, [5, 40, 50, 70], min_frames=15)
    assert _ranges(shots) == [(0, 39), (40, 69), (70, 99)]
    assert all(s.shot.frame_count >= 15 for s in shots)


def test_a_minimum_of_one_frame_closes_each_shot_on_its_cut() -> None:
    shots, released = _run(60, [30, 57], min_frames=1)
    assert _ranges(shots) == [(0, 29), (30, 56), (57, 59)]
    assert released == {1: 30, 2: 57, 3: -1}


def test_holding_a_shot_back_does_not_change_its_samples() -> None:
    # A long shot (stride doubling) that keeps its cut picks exactly what it would have picked
    # if it had been closed on the cut.
    shots, _ = _run(760, [700], min_frames=15, capacity=20)
    plain = ShotReservoir(20, 5)
    plain.reset(0)
    for n in range(700):
        if plain.wants(n):
            plain.add(Candidate(n, f"frame{n}"))
    assert [c.frame_no for c in shots[0].samples] == [c.frame_no for c in plain.pick(699)]


def test_a_merged_long_shot_keeps_bounded_candidates_and_even_samples() -> None:
    shots, _ = _run(705, [700], min_frames=15, capacity=20)
    assert _ranges(shots) == [(0, 704)]
    frames = [c.frame_no for c in shots[0].samples]
    ideal = sample_positions(0, 704, 5)
    # 20 candidates over 705 frames: stride 64 at most, so each sample is within 32 frames.
    assert all(abs(f - i) <= 32 for f, i in zip(frames, ideal, strict=True)), (frames, ideal)


def test_no_frame_no_shot() -> None:
    assert ShotAssembler(FPS, 40, 5, 15).finish() is None
