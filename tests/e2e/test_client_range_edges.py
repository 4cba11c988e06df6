"""The range's clipping against the whole-film pass (``client.media.clip`` through the real
``ShotScanner`` on generated films): for many ranges, the shots are exactly the whole-film
shots intersected with the range's frames (same ids, the film's frame numbers), each with its
samples inside its clipped part, also where the range ends just before or just after a cut
(the held shot) and where the film's short last shot is merged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from client.media.probe import probe
from client.media.scan import ShotScanner
from client.options import AudioOptions, ExtractOptions, TimeRange
from tests.film_factory import FilmTruth, ShotSpec, make_film

FPS = 25
# Cuts at 50, 90, 150, 160 and 220: the 10-frame shot at 150 and the 8-frame last shot are
# shorter than the 15-frame minimum, so the whole-film pass has 4 shots, the last from 150 to
# the end (the cut at 160 dropped, the short last shot merged).
SPECS = [
    ShotSpec(frames=50, brightness=0.8, pattern="bars", audio=None),
    ShotSpec(frames=40, brightness=0.2, pattern="checker", audio=None),
    ShotSpec(frames=60, brightness=0.5, pattern="circles", audio=None),
    ShotSpec(frames=10, brightness=0.9, pattern="noise", audio=None),
    ShotSpec(frames=60, brightness=0.3, pattern="gradient", audio=None),
    ShotSpec(frames=8, brightness=0.7, pattern="flat", audio=None),
]


def scan(path: Path, span: TimeRange | None) -> list[tuple[int, int, int, list[int]]]:
    options = ExtractOptions(audio=AudioOptions(enabled=False), range=span)
    scanner = ShotScanner(probe(path), options)
    return [
        (s.shot.shot_id, s.shot.start_frame, s.shot.end_frame, [c.frame_no for c in s.samples])
        for s in scanner
    ]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("edges") / "film.mkv", SPECS, fps=FPS, size=(160, 120))


@pytest.fixture(scope="module")
def whole(film: FilmTruth) -> list[tuple[int, int, int, list[int]]]:
    shots = scan(film.path, None)
    assert [s[:3] for s in shots] == [(1, 0, 49), (2, 50, 89), (3, 90, 149), (4, 150, 227)]
    return shots


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0.0, None),
        (0.5, 1.0),  # inside one shot
        (1.0, 3.0),  # across a cut, both ends clipped
        (2.0, 6.0),  # both bounds on cuts
        (0.0, 3.44),  # ends 4 frames before the cut at 90: that shot is held when decoding stops
        (0.0, 3.72),  # ends 3 frames after the cut at 90
        (3.6, 3.64),  # a single frame, the first of a shot
        (8.9, None),  # inside the merged last shot, to the film's end
        (6.2, 6.5),  # across the dropped cut at 160
        (5.0, 9.0),  # past the last frame (9.12 s): clipped by the film's end
        (1.96, 2.04),  # two frames around a cut: the last of one shot, the first of the next
    ],
)
def test_range_is_the_whole_film_intersected(
    film: FilmTruth, whole: list, start: float, end: float | None
) -> None:
    first = math.ceil(start * FPS - 1e-9)
    last = (math.ceil(end * FPS - 1e-9) - 1) if end is not None else film.frame_count - 1
    expected = [
        (sid, max(a, first), min(b, last)) for sid, a, b, _ in whole if a <= last and b >= first
    ]
    got = scan(film.path, TimeRange(start, end))
    assert [g[:3] for g in got] == expected
    for (sid, a, b, samples), full in zip(
        got, [w for w in whole if w[0] in {e[0] for e in expected}], strict=True
    ):
        assert len(samples) == min(5, b - a + 1)
        assert all(a <= n <= b for n in samples), (sid, a, b, samples)
        assert samples == sorted(samples)
        if (a, b) == (full[1], full[2]):
            assert samples == full[3]  # an unclipped shot is sampled as in the whole film


def test_decoding_stops_soon_after_the_range(film: FilmTruth) -> None:
    options = ExtractOptions(audio=AudioOptions(enabled=False), range=TimeRange(0.0, 1.0))
    scanner = ShotScanner(probe(film.path), options)
    assert [s.shot.end_frame for s in scanner] == [24]
    # the last in-range frame is 24; the pass ends 15 frames (the minimum shot) after it,
    # plus the frames held back (the transition finder's lookahead, longer than the
    # detector's 2-frame delay)
    assert scanner.stats.range_stopped
    assert scanner.stats.hold_frames >= 2
    assert scanner.stats.frames == 24 + 15 + scanner.stats.hold_frames + 1
    assert scanner.stats.dropped_frames == 0
