"""Damaged and unusual films are reported, never passed off as clean data (issue 8, item 11).

Real generated films (``tests/film_factory.py``), damaged with fixed seeds, decoded for real:

- audio that cannot be decoded from some point on: the shots there get no audio features and an
  ``audio_error`` (not zero-filled "silence"), and run.json / summary.json count them;
- random byte damage: the decode errors and dropped frames are in run.json and on stderr, and
  the same file with the same options always gives the same shots (resume relies on it);
- variable frame rate: frame numbers are the decoded frame index everywhere (summary, shots,
  the printed count), and times come from the timestamps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client.api import ServerPool
from client.media.probe import probe
from client.options import ExtractOptions, PostingOptions
from client.pipeline.run import analyze, extract
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import (
    FilmTruth,
    ShotSpec,
    corrupt_bytes,
    corrupt_stream_packets,
    make_film,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "damage-token"


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def _cli_shots(film: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "shots", str(film), "--out", str(out), "-q"],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- audio that fails mid-film -------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_audio_film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    """Three 1.2 s shots with loud audio; every AAC packet from 1.3 s on is garbage."""
    specs = [
        ShotSpec(frames=30, brightness=0.8, pattern="bars", audio="tone"),
        ShotSpec(frames=30, brightness=0.2, pattern="checker", audio="noise"),
        ShotSpec(frames=30, brightness=0.6, pattern="circles", audio="tone", tone_hz=880),
    ]
    truth = make_film(tmp_path_factory.mktemp("audio") / "film.mp4", specs, size=(160, 120))
    assert corrupt_stream_packets(truth.path, "audio", after_seconds=1.3, seed=7) > 10
    return truth


def test_shots_after_an_audio_failure_get_no_features_and_an_audio_error(
    broken_audio_film: FilmTruth, tmp_path: Path
) -> None:
    report = extract(probe(broken_audio_film.path), tmp_path, ExtractOptions())
    records = _records(tmp_path)
    assert [r["shot_id"] for r in records] == [1, 2, 3]
    first, *later = records
    assert first["audio_features"] is not None and first["audio_error"] is None
    assert first["audio_features"]["rms_energy_mean"] > 0.1  # the real tone, not zeros
    for rec in later:
        assert rec["audio_features"] is None  # not a zero-filled "silence"
        assert "could not be decoded" in rec["audio_error"]
    assert report.audio_errors == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["shots_with_audio"] == 1 and summary["shots_with_audio_error"] == 2
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["complete"] is True
    audio = run["audio_error"]
    assert audio["error"] and audio["corrupt_packets"] > 10
    assert audio["shots_with_audio_error"] == 2
    assert audio["missing_from"] == pytest.approx(1.3, abs=0.1)
    assert run["video_decode"]["dropped_frames"] == 0  # the picture is intact


def test_analyze_sends_no_audio_features_for_shots_whose_audio_failed(
    broken_audio_film: FilmTruth, tmp_path: Path
) -> None:
    with FakeAnalysisServer(token=TOKEN) as server:
        pool = ServerPool([server.url], TOKEN, PostingOptions(batch_size=1))
        try:
            analyze(probe(broken_audio_film.path), tmp_path, ExtractOptions(), pool, "s", "t")
        finally:
            pool.close()
    records = _records(tmp_path)
    # The fake server classifies a shot without audio features as "unknown", never "silence".
    assert [r["audio_class"] for r in records][1:] == ["unknown", "unknown"]
    assert records[0]["audio_class"] != "unknown"
    assert [bool(r["audio_error"]) for r in records] == [False, True, True]


def test_an_intact_film_reports_no_damage(tmp_path: Path) -> None:
    truth = make_film(
        tmp_path / "ok.mp4",
        [ShotSpec(frames=25, audio="tone"), ShotSpec(frames=25, brightness=0.2, audio="silence")],
        size=(160, 120),
    )
    extract(probe(truth.path), tmp_path / "out", ExtractOptions())
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["video_decode"]["dropped_frames"] == 0
    assert run["video_decode"]["corrupt_packets"] == 0
    assert run["video_decode"]["frames_decoded"] == truth.frame_count
    assert run["audio_error"]["error"] is None and run["audio_error"]["shots_with_audio_error"] == 0
    records = _records(tmp_path / "out")
    assert all(r["audio_error"] is None and r["audio_features"] for r in records)


# --- random byte damage ---------------------------------------------------------------------------
DAMAGE_SPECS = [
    ShotSpec(frames=30, brightness=b, pattern=p, audio="tone")
    for b, p in [
        (0.8, "bars"),
        (0.2, "checker"),
        (0.6, "circles"),
        (0.9, "noise"),
        (0.3, "gradient"),
        (0.7, "bars"),
        (0.1, "circles"),
        (0.5, "checker"),
    ]
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("suffix", "video", "audio", "rate"),
    [("mp4", "libx264", "aac", 44100), ("webm", "libvpx-vp9", "libopus", 48000)],
)
def test_a_damaged_film_gives_the_same_shots_every_time_and_reports_the_damage(
    tmp_path: Path, suffix: str, video: str, audio: str, rate: int
) -> None:
    truth = make_film(
        tmp_path / f"damaged.{suffix}",
        DAMAGE_SPECS,
        size=(320, 240),
        video_codec=video,
        audio_codec=audio,
        sample_rate=rate,
        gop=25,
    )
    corrupt_bytes(truth.path, fraction=0.003, seed=1234)
    runs = []
    for i in range(3):
        out = tmp_path / f"run{i}"
        if i == 0:  # once through the CLI, for the stderr report
            proc = _cli_shots(truth.path, out)
            assert proc.returncode == 0, proc.stderr
            stderr = proc.stderr
        else:
            extract(probe(truth.path), out, ExtractOptions())
        runs.append(out)
    shot_lists = [
        [(r["start_frame"], r["end_frame"], r["start_time"], r["end_time"]) for r in _records(o)]
        for o in runs
    ]
    assert shot_lists[0] == shot_lists[1] == shot_lists[2]
    decode = [json.loads((o / "run.json").read_text())["video_decode"] for o in runs]
    assert decode[0] == decode[1] == decode[2]
    report = decode[0]
    assert report["corrupt_packets"] > 0 and report["errors"]
    assert report["dropped_frames"] > 0
    assert report["frames_decoded"] + report["dropped_frames"] == truth.frame_count
    assert report["expected_frames"] == truth.frame_count
    assert report["dropped_fraction"] == pytest.approx(
        report["dropped_frames"] / truth.frame_count, abs=1e-6
    )
    assert f"{report['dropped_frames']} frame(s) could not be decoded" in stderr
    # Frame numbers count decoded frames: the last shot ends at the last decoded frame.
    assert shot_lists[0][-1][1] + 1 == report["frames_decoded"]


# --- variable frame rate --------------------------------------------------------------------------
def test_variable_frame_rate_frame_numbers_and_times_agree(tmp_path: Path) -> None:
    specs = [
        ShotSpec(frames=30, frame_seconds=0.04, brightness=0.8, pattern="bars", audio="tone"),
        ShotSpec(frames=30, frame_seconds=0.02, brightness=0.2, pattern="checker", audio="noise"),
        ShotSpec(frames=20, frame_seconds=0.1, brightness=0.6, pattern="circles", audio="tone"),
    ]
    truth = make_film(tmp_path / "vfr.mp4", specs, size=(160, 120))
    assert truth.variable_frame_rate
    out = tmp_path / "out"
    proc = _cli_shots(truth.path, out)
    assert proc.returncode == 0, proc.stderr
    assert f"{truth.frame_count} frames" in proc.stdout  # the printed count ...
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frame_count"] == truth.frame_count  # ... the summary's ...
    records = _records(out)
    assert records[-1]["end_frame"] + 1 == truth.frame_count  # ... and the shots' agree
    assert sum(r["frame_count"] for r in records) == truth.frame_count
    assert len(records) == len(specs)
    for rec, (first, last), (start, end), spec in zip(
        records, truth.shot_ranges, truth.shot_times, specs, strict=True
    ):
        assert abs(rec["start_frame"] - first) <= 1 and abs(rec["end_frame"] - last) <= 1
        step = spec.frame_seconds or 0.0
        assert rec["start_time"] == pytest.approx(start, abs=step + 1e-3)  # from timestamps
        assert rec["end_time"] == pytest.approx(end, abs=step + 1e-3)
    assert records[-1]["end_time"] == pytest.approx(truth.duration, abs=1e-3)
    assert summary["duration"] == pytest.approx(truth.duration, abs=1e-3)
    run = json.loads((out / "run.json").read_text())
    assert run["video_decode"]["dropped_frames"] == 0
