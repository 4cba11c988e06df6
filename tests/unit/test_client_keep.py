"""``analyze`` keeps everything a server returns and everything it sent: the result blocks
(``model_attributes``, ``measured``, ``audio``, ``evidence``, ``generation``), the sampled JPEGs
in frames/ (the very bytes posted), SMPTE timecodes, and where the film is (run.json
``source``, summary.json ``film``), which a moved film's resume updates instead of refusing.

Real generated films, the real pipeline and a real HTTP server (tests/fake_analysis_server.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

from client.api import ServerPool
from client.media.frames import output_size
from client.media.probe import probe
from client.media.smpte import smpte
from client.options import AudioOptions, ExtractOptions, PostingOptions
from client.pipeline.run import analyze, extract
from qwen_server.contract.analysis import AudioCues, GenerationCounts, MeasuredSignals
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import FilmTruth, ShotSpec, make_film

TOKEN = "keep-token"
SPECS = [
    ShotSpec(frames=30, brightness=0.8, pattern="bars", audio="tone"),
    ShotSpec(frames=25, brightness=0.2, pattern="checker", audio="noise"),
    ShotSpec(frames=35, brightness=0.5, pattern="circles", audio="tone", tone_hz=880),
]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("keep") / "film.mp4", SPECS, size=(160, 120))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnalysisServer]:
    with FakeAnalysisServer(token=TOKEN) as srv:
        yield srv


def run_analyze(
    film_path: Path,
    out: Path,
    server: FakeAnalysisServer,
    frames: bool = True,
    audio: AudioOptions | None = None,
) -> list[dict]:
    pool = ServerPool([server.url], TOKEN, PostingOptions(batch_size=2))
    try:
        report = analyze(
            probe(film_path),
            out,
            ExtractOptions(audio=audio or AudioOptions()),
            pool,
            "keep",
            film_path.name,
            frames=frames,
        )
    finally:
        pool.close()
    return report.records


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def test_records_keep_every_result_block(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    records = lines(tmp_path) if run_analyze(film.path, tmp_path, server) else []
    assert [r["shot_id"] for r in records] == [1, 2, 3]
    for r in records:
        assert list(r["model_attributes"]) == list(r["attributes"])
        MeasuredSignals.model_validate(r["measured"])  # the contract's own model
        AudioCues.model_validate(r["audio"])
        assert GenerationCounts.model_validate(r["generation"]).batch_size in (1, 2)
        assert set(r["evidence"]) == set(r["attributes"])
        assert r["evidence"]["darkness"] == ["visual:darkness"]
        # darkness is measured from the very JPEGs the server decoded
        assert r["measured"]["darkness"] == pytest.approx(r["attributes"]["darkness"])
    batches = sorted(r["generation"]["batch_size"] for r in records)
    assert batches == [1, 2, 2]  # batch_size=2 over 3 shots


def test_audio_block_is_null_without_audio_features(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    run_analyze(film.path, tmp_path, server, audio=AudioOptions(enabled=False))
    records = lines(tmp_path)
    assert records and all(r["audio"] is None for r in records)
    assert all(r["measured"] is not None for r in records)


def test_analyze_writes_the_jpegs_it_sent(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    server.recorded.image_sha256.clear()
    run_analyze(film.path, tmp_path, server)
    records = lines(tmp_path)
    files = sorted((tmp_path / "frames").iterdir())
    assert len(files) == 5 * len(records) == 15  # frames per shot x shots
    listed = [name for r in records for name in r["images"]]
    assert sorted(listed) == [f"frames/{f.name}" for f in files]
    for r in records:
        assert r["images"] == [
            f"frames/shot{r['shot_id']:05d}_f{n:07d}.jpg" for n in r["sample_frames"]
        ]
    for f in files:
        with Image.open(f) as im:
            im.load()
            assert im.format == "JPEG" and im.size == output_size(160, 120, 448, 28)
    # the files are the very bytes that were posted, and every posted JPEG was kept
    written = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert written == server.recorded.image_sha256


def test_no_frames_writes_no_jpegs_and_is_a_setting(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    run_analyze(film.path, tmp_path, server, frames=False)
    assert not (tmp_path / "frames").exists()
    assert all("images" not in r for r in lines(tmp_path))
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest["settings"]["frames"] is False


def test_smpte_at_25_fps_in_jsonl_and_csv(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    run_analyze(film.path, tmp_path, server)
    records = lines(tmp_path)
    expected = [
        ("00:00:00:00", "00:00:01:05"),  # frames 0..29: out point is frame 30
        ("00:00:01:05", "00:00:02:05"),  # frames 30..54
        ("00:00:02:05", "00:00:03:15"),  # frames 55..89
    ]
    assert [(r["start_smpte"], r["end_smpte"]) for r in records] == expected
    for r, (first, last) in zip(records, film.shot_ranges, strict=True):
        assert (r["start_frame"], r["end_frame"]) == (first, last)
    with (tmp_path / "shots.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["start_smpte"], row["end_smpte"]) for row in rows] == expected


def test_smpte_at_24_fps_from_the_shots_command(tmp_path: Path) -> None:
    truth = make_film(tmp_path / "f24.mkv", SPECS[:2], fps=24, size=(160, 120))
    report = extract(probe(truth.path), tmp_path / "out", ExtractOptions())
    assert [(r["start_smpte"], r["end_smpte"]) for r in report.records] == [
        ("00:00:00:00", "00:00:01:06"),
        ("00:00:01:06", "00:00:02:07"),
    ]
    assert [smpte(r["end_frame"] + 1, Fraction(24)) for r in report.records] == [
        "00:00:01:06",
        "00:00:02:07",
    ]


def test_source_is_recorded_and_a_moved_film_resumes(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_analyze(film.path, out, server)
    manifest = json.loads((out / "run.json").read_text())
    source = {
        "path": str(film.path.resolve()),
        "fps": "25/1",
        "fps_float": 25.0,
        "width": 160,
        "height": 120,
        "drop_frame": False,
    }
    assert manifest["source"] == source
    summary = json.loads((out / "summary.json").read_text())
    assert {k: summary["film"][k] for k in source} == source
    first = {n: (out / n).read_bytes() for n in ("shots.jsonl", "shots.csv")}

    # Interrupted run (last record lost), then the film moves: the resume is not refused,
    # sends only the missing shot, records the new path, and the results are byte-identical.
    kept = (out / "shots.jsonl").read_text().splitlines()[:2]
    (out / "shots.jsonl").write_text("\n".join(kept) + "\n")
    manifest["complete"] = False
    (out / "run.json").write_text(json.dumps(manifest))
    moved = tmp_path / "elsewhere" / film.path.name
    moved.parent.mkdir()
    shutil.copy(film.path, moved)
    arrivals = len(server.recorded.arrivals)
    run_analyze(moved, out, server)
    assert [i for batch in server.recorded.arrivals[arrivals:] for i in batch] == [3]
    assert json.loads((out / "run.json").read_text())["source"]["path"] == str(moved.resolve())
    assert json.loads((out / "summary.json").read_text())["film"]["path"] == str(moved.resolve())
    assert {n: (out / n).read_bytes() for n in first} == first
