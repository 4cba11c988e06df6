"""``--start``/``--end`` on ``shots`` and ``analyze``, through the real CLI on a generated film
with known cuts: exactly the overlapping shots, clipped at the bounds with the film's own frame
numbers, shot ids and SMPTE timecodes; samples inside the clipped part; decoding stopped soon
after the range; the range a setting of the run (another range is refused unless --force); bad
values one-line usage errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.cli_runner import run_cli
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import FilmTruth, ShotSpec, make_film

TOKEN = "range-token"
# 25 fps: shots are frames 0-49 (0-2 s), 50-89 (2-3.6 s), 90-149 (3.6-6 s), 150-199 (6-8 s).
SPECS = [
    ShotSpec(frames=50, brightness=0.8, pattern="bars", audio="tone"),
    ShotSpec(frames=40, brightness=0.2, pattern="checker", audio="noise"),
    ShotSpec(frames=60, brightness=0.5, pattern="circles", audio="tone", tone_hz=880),
    ShotSpec(frames=50, brightness=0.3, pattern="gradient", audio="silence"),
]


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, token=TOKEN)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def spans(out: Path) -> list[tuple[int, int, int]]:
    return [(r["shot_id"], r["start_frame"], r["end_frame"]) for r in records(out)]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    truth = make_film(tmp_path_factory.mktemp("range") / "film.mp4", SPECS, size=(160, 120))
    assert truth.shot_ranges == ((0, 49), (50, 89), (90, 149), (150, 199))
    return truth


@pytest.fixture(scope="module")
def whole(film: FilmTruth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    proc = cli("shots", str(film.path), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert spans(out) == [(1, 0, 49), (2, 50, 89), (3, 90, 149), (4, 150, 199)]
    return out


def test_shots_in_a_range_are_clipped_with_the_films_frame_numbers(
    film: FilmTruth, whole: Path, tmp_path: Path
) -> None:
    proc = cli(
        "shots", str(film.path), "--out", str(tmp_path), "-q", "--start", "2.5", "--end", "5.2"
    )
    assert proc.returncode == 0, proc.stderr
    # 2.5 s is frame 62.5: the first frame at or after it is 63; the last before 5.2 s is 129
    assert spans(tmp_path) == [(2, 63, 89), (3, 90, 129)]
    first, second = records(tmp_path)
    assert (first["start_time"], first["end_time"]) == (2.52, 3.6)
    assert (second["start_time"], second["end_time"]) == (3.6, 5.2)
    assert (first["start_smpte"], first["end_smpte"]) == ("00:00:02:13", "00:00:03:15")
    assert (second["start_smpte"], second["end_smpte"]) == ("00:00:03:15", "00:00:05:05")
    for r in (first, second):
        assert len(r["sample_frames"]) == 5
        assert all(r["start_frame"] <= n <= r["end_frame"] for n in r["sample_frames"])
        assert r["audio_features"] is not None and r["audio_error"] is None
    files = sorted((tmp_path / "frames").iterdir())
    assert len(files) == 10
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG"
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest["settings"]["range"] == {"start": 2.5, "end": 5.2}
    decode = manifest["video_decode"]
    assert decode["frames_decoded"] < 200 and decode["dropped_frames"] == 0
    assert len((tmp_path / "shots.csv").read_text().splitlines()) == 3


def test_a_range_on_cuts_gives_the_whole_film_runs_records(
    film: FilmTruth, whole: Path, tmp_path: Path
) -> None:
    proc = cli("shots", str(film.path), "--out", str(tmp_path), "-q", "--start", "00:00:03.600")
    assert proc.returncode == 0, proc.stderr
    assert records(tmp_path) == records(whole)[2:]  # shots 3 and 4, unclipped: identical


def test_analyze_sends_only_the_shots_of_the_range(film: FilmTruth, tmp_path: Path) -> None:
    with FakeAnalysisServer(token=TOKEN) as server:
        base = ["analyze", str(film.path), "-s", server.url, "--out", str(tmp_path), "-q"]
        proc = cli(*base, "--start", "2", "--end", "0:06")
        assert proc.returncode == 0, proc.stderr
        assert sorted(server.shot_ids) == [2, 3]
        assert spans(tmp_path) == [(2, 50, 89), (3, 90, 149)]
        assert len(list((tmp_path / "frames").iterdir())) == 10
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["shot_count"] == 2

        # Same range again: already complete. Another range: refused, naming the setting.
        again = cli(*base, "--start", "2", "--end", "6")
        assert again.returncode == 0 and "already complete" in again.stdout
        other = cli(*base, "--start", "1", "--end", "6")
        assert other.returncode == 2
        assert "settings.range.start (2.0 -> 1.0)" in other.stderr
        assert "Traceback" not in other.stderr
        forced = cli(*base, "--start", "1", "--end", "6", "--force")
        assert forced.returncode == 0, forced.stderr
        assert spans(tmp_path) == [(1, 25, 49), (2, 50, 89), (3, 90, 149)]


def test_an_end_bound_stops_decoding_early(film: FilmTruth, tmp_path: Path) -> None:
    proc = cli("shots", str(film.path), "--out", str(tmp_path), "-q", "--end", "1", "--no-audio")
    assert proc.returncode == 0, proc.stderr
    assert spans(tmp_path) == [(1, 0, 24)]
    decode = json.loads((tmp_path / "run.json").read_text())["video_decode"]
    # The pass ends the minimum shot (15 frames) plus the frames held back for transitions
    # (about 22 at 25 fps) after frame 24: far before the film's 150 frames.
    assert 25 <= decode["frames_decoded"] <= 24 + 15 + 30 + 1
    assert decode["dropped_frames"] == 0
    assert "could not be decoded" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "-1"], "--start"),
        (["--start", "abc"], "expected seconds or HH:MM:SS"),
        (["--end", "00:61:00"], "below 60"),
        (["--start", "3", "--end", "2"], "must be after --start"),
        (["--start", "3", "--end", "3"], "must be after --start"),
        (["--start", "100"], "past the film's end"),
        (["--start", "1", "--end", "00:01:40"], "past the film's end"),
        (["--end", "nan"], "--end"),
    ],
)
def test_bad_ranges_are_usage_errors(
    film: FilmTruth, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = cli("shots", str(film.path), "--out", str(tmp_path), "-q", "--no-audio", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "shots.jsonl").exists()
