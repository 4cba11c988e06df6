"""The single decode pass on generated films: cut positions, sampled frames, bad input."""

from __future__ import annotations

import io
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.media.frames import sample_positions
from client.media.probe import probe
from client.media.scan import ShotScanner
from client.options import DetectionOptions, ExtractOptions, SamplingOptions
from client.pipeline.source import ShotSource
from tests.film_factory import FilmTruth, ShotSpec, make_film, standard_shots


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("films") / "standard.mp4", standard_shots())


def _scan(path: Path, **detection: object) -> tuple[list, ShotScanner]:
    scanner = ShotScanner(probe(path), ExtractOptions(detection=DetectionOptions(**detection)))
    return list(scanner), scanner


def truth_seconds(truth: FilmTruth, index: int) -> str:
    return f"{truth.shot_seconds(index)[0]:.3f}"


def _assert_cuts(found: list[int], truth: FilmTruth) -> None:
    assert len(found) == len(truth.cut_frames), (found, truth.cut_frames)
    for f, t in zip(found, truth.cut_frames, strict=True):
        assert abs(f - t) <= 1, (found, truth.cut_frames)


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_cuts_are_found_within_one_frame(film: FilmTruth, detector: str) -> None:
    shots, scanner = _scan(film.path, detector=detector)
    _assert_cuts([s.shot.start_frame for s in shots[1:]], film)
    # Shots tile the film: contiguous, first at frame 0, last ending at the last frame.
    assert shots[0].shot.start_frame == 0
    assert shots[-1].shot.end_frame == film.frame_count - 1 == scanner.stats.last_frame
    for a, b in zip(shots, shots[1:], strict=False):
        assert b.shot.start_frame == a.shot.end_frame + 1
        assert b.shot.start_time == pytest.approx(a.shot.end_time)
    assert [s.shot.shot_id for s in shots] == list(range(1, len(shots) + 1))
    assert shots[1].shot.as_record()["start_timecode"] == f"00:00:0{truth_seconds(film, 1)}"


def test_random_films_cut_positions(tmp_path: Path) -> None:
    rng = random.Random(7)
    specs = [
        ShotSpec(
            frames=rng.randint(18, 90),
            brightness=rng.uniform(0.1, 0.9),
            pattern=rng.choice(["bars", "checker", "noise", "gradient", "circles"]),
            audio=None,
        )
        for _ in range(9)
    ]
    truth = make_film(tmp_path / "random.mkv", specs, fps=24, size=(256, 144))
    shots, _ = _scan(truth.path)
    _assert_cuts([s.shot.start_frame for s in shots[1:]], truth)


@pytest.mark.parametrize("detector", ["hash", "histogram"])
def test_other_detectors_are_selectable(tmp_path: Path, detector: str) -> None:
    # Still pictures: these detectors are not meant for textures drifting by a pixel a frame.
    looks = [(0.2, "gradient"), (0.8, "checker"), (0.3, "circles"), (0.9, "bars")]
    specs = [ShotSpec(frames=30, brightness=b, pattern=p, drift=0, audio=None) for b, p in looks]
    truth = make_film(tmp_path / "still.mp4", specs)
    shots, _ = _scan(truth.path, detector=detector)
    _assert_cuts([s.shot.start_frame for s in shots[1:]], truth)


def test_sampled_frames_sit_at_even_positions(film: FilmTruth) -> None:
    shots, _ = _scan(film.path)
    for s, (first, last) in zip(shots, film.shot_ranges, strict=True):
        frames = [c.frame_no for c in s.samples]
        ideal = sample_positions(first, last, 5)
        length = last - first + 1
        # Exact while the shot fits the 40 candidates; else within half the candidate stride.
        slack = 0 if length <= 40 else 2 ** math.ceil(math.log2(length / 40)) / 2
        assert all(abs(f - i) <= slack for f, i in zip(frames, ideal, strict=True)), (frames, ideal)
        assert first < frames[0] and frames[-1] < last


def test_long_shots_keep_bounded_candidates_and_near_ideal_samples(tmp_path: Path) -> None:
    truth = make_film(
        tmp_path / "long.mp4",
        [
            ShotSpec(frames=700, audio=None),
            ShotSpec(frames=30, brightness=0.1, pattern="checker", audio=None),
        ],
        size=(160, 120),
    )
    opts = ExtractOptions(sampling=SamplingOptions(candidates=20))
    scanner = ShotScanner(probe(truth.path), opts)
    shots = list(scanner)
    frames = [c.frame_no for c in shots[0].samples]
    ideal = sample_positions(0, 699, 5)
    # 20 candidates over 700 frames: stride 64 at most, so each sample is within 32 frames.
    assert all(abs(f - i) <= 32 for f, i in zip(frames, ideal, strict=True))


def test_a_single_shot_film_is_one_shot(tmp_path: Path) -> None:
    truth = make_film(tmp_path / "one.mp4", [ShotSpec(frames=50, pattern="circles")])
    shots, _ = _scan(truth.path)
    assert len(shots) == 1
    assert (shots[0].shot.start_frame, shots[0].shot.end_frame) == (0, 49)
    assert shots[0].shot.duration == pytest.approx(2.0)


def test_a_shot_shorter_than_the_frame_count_sends_what_it_has(tmp_path: Path) -> None:
    specs = [
        ShotSpec(frames=30, brightness=0.8, audio=None),
        ShotSpec(frames=3, brightness=0.1, pattern="checker", audio=None),
        ShotSpec(frames=30, brightness=0.5, pattern="circles", audio=None),
    ]
    truth = make_film(tmp_path / "flash.mp4", specs)
    shots, _ = _scan(truth.path, detector="content", min_shot_seconds=0.04)
    assert [(s.shot.start_frame, s.shot.end_frame) for s in shots] == list(truth.shot_ranges)
    assert [c.frame_no for c in shots[1].samples] == [30, 31, 32]


def test_a_noise_cut_near_the_end_does_not_leave_a_tiny_last_shot(tmp_path: Path) -> None:
    # H.264 noise in the dark shot's hue makes the detector report a cut at frame 57; the last
    # shot would be 3 frames, under the 15-frame minimum, so it is merged into the shot before.
    specs = [ShotSpec(frames=30, brightness=0.8), ShotSpec(frames=30, brightness=0.1)]
    truth = make_film(tmp_path / "dark_end.mp4", specs)
    shots, scanner = _scan(truth.path)
    assert len(shots) == 2, [(s.shot.start_frame, s.shot.end_frame) for s in shots]
    cut = shots[1].shot.start_frame
    assert abs(cut - 30) <= 1
    assert (shots[0].shot.start_frame, shots[0].shot.end_frame) == (0, cut - 1)
    assert shots[1].shot.end_frame == 59 == scanner.stats.last_frame
    for s in shots:  # samples evenly spread over each whole shot
        ideal = sample_positions(s.shot.start_frame, s.shot.end_frame, 5)
        assert [c.frame_no for c in s.samples] == ideal
    # Through the pipeline (audio slices follow the merged shot).
    prepared = list(ShotSource(probe(truth.path), ExtractOptions()))
    assert [(p.shot.start_frame, p.shot.end_frame) for p in prepared] == [(0, cut - 1), (cut, 59)]
    assert all(p.audio_features is not None and len(p.jpegs) == 5 for p in prepared)


def test_dark_and_bright_shots_survive_to_the_jpegs(film: FilmTruth) -> None:
    source = ShotSource(probe(film.path), ExtractOptions())
    lumas = []
    for prepared in source:
        assert len(prepared.jpegs) == 5
        means = []
        for jpeg in prepared.jpegs:
            img = Image.open(io.BytesIO(jpeg))
            assert img.size == (308, 252)  # 320x240 snapped to the 28-pixel grid
            means.append(np.asarray(img.convert("L")).mean() / 255)
        lumas.append(float(np.mean(means)))
    bright = [i for i, s in enumerate(film.shots) if s.brightness >= 0.8]
    dark = [i for i, s in enumerate(film.shots) if s.brightness <= 0.2]
    assert min(lumas[i] for i in bright) > max(lumas[i] for i in dark) + 0.4


def test_a_film_without_audio_has_no_audio_features(tmp_path: Path) -> None:
    looks = [ShotSpec(frames=30, audio=None), ShotSpec(frames=30, pattern="circles", audio=None)]
    truth = make_film(tmp_path / "mute.mp4", looks)
    info = probe(truth.path)
    assert not info.has_audio
    prepared = list(ShotSource(info, ExtractOptions()))
    assert len(prepared) == 2 and all(p.audio_features is None for p in prepared)


def test_corrupt_packets_are_skipped_with_a_warning(
    film: FilmTruth, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = bytearray(film.path.read_bytes())
    rng = random.Random(1)
    for frac in (0.3, 0.6):
        start = int(len(data) * frac)
        data[start : start + 3000] = bytes(rng.randrange(256) for _ in range(3000))
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="client")
    shots, scanner = _scan(bad)
    assert scanner.stats.corrupt_packets > 0
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert 0 < scanner.stats.frames < film.frame_count
    # Frame numbers count decoded frames; times follow the timestamps, so the cuts after the
    # damage stay in place in time.
    starts = [s.shot.start_time for s in shots[1:]]
    assert sum(any(abs(s - t) <= 1.5 / film.fps for s in starts) for t in film.cut_times) >= 3
    assert shots[-1].shot.end_frame + 1 == scanner.stats.frames
    assert scanner.stats.dropped_frames == film.frame_count - scanner.stats.frames
