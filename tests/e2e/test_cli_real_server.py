"""``qwen-client analyze`` against the real qwen_server (tiny random-weight Qwen2-VL on CPU).

The client and the server are separate processes talking HTTP on loopback, as in production;
the film is generated with known cuts so the analysed shots can be checked against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qwen_server.contract.constants import ATTRIBUTES
from tests.film_factory import ShotSpec, make_film

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_analyze_a_film_with_the_real_server(server, tmp_path: Path) -> None:
    film = make_film(
        tmp_path / "real server film.mp4",
        [
            ShotSpec(frames=30, brightness=0.85, pattern="bars", audio="tone"),
            ShotSpec(frames=25, brightness=0.08, pattern="checker", audio="silence"),
            ShotSpec(frames=30, brightness=0.5, pattern="circles", audio="noise"),
        ],
        size=(224, 168),
    )
    out = tmp_path / "out"
    env = dict(os.environ, QWEN_SERVER_TOKEN=server.api_key)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "client.cli",
            "analyze",
            str(film.path),
            "--server",
            server.url,
            "--out",
            str(out),
            "--batch-size",
            "2",
            "-q",
            "--no-exports",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [r["start_frame"] for r in records] == [0, 30, 55]
    for r in records:
        assert isinstance(r["caption"], str) and r["audio_class"]
        assert set(r["attributes"]) == set(ATTRIBUTES)
        assert all(0.0 <= v <= 1.0 for v in r["attributes"].values())
    # The measured darkness is fused in: the dark shot scores darker than the bright one.
    assert records[1]["attributes"]["darkness"] > records[0]["attributes"]["darkness"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shot_count"] == 3 and summary["model"]
    assert not (out / "report.html").exists() and not (out / "timeline.otio").exists()
    # The server kept the results under the session derived from the file name.
    session = "real_server_film.mp4"
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {server.api_key}"}
    ) as client:
        r = client.get(f"/sessions/{session}")
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["shot_count"] == 3 and detail["title"] == film.path.name
    assert sorted(s["shot_id"] for s in detail["shots"]) == [1, 2, 3]


def test_a_server_that_cannot_store_is_reported_and_nothing_is_lost(
    server_factory, tmp_path: Path
) -> None:
    from tests.reliability.test_store_full import _fill

    film = make_film(
        tmp_path / "unstored.mp4",
        [ShotSpec(frames=30, brightness=0.85), ShotSpec(frames=30, brightness=0.1)],
        size=(224, 168),
    )
    out = tmp_path / "out"
    with server_factory(store={"max_size_mb": 0.06, "reserve_mb": 0}) as live:
        _fill(live.app.state.store, "filler")  # the store is full before the film arrives
        env = dict(os.environ, QWEN_SERVER_TOKEN=live.api_key)
        proc = subprocess.run(
            [sys.executable, "-m", "client.cli", "analyze", str(film.path), "-s", live.url]
            + ["--out", str(out), "-q"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert proc.returncode == 0, proc.stderr
    # One warning names the session and the store's reason; the results are all kept locally.
    warnings = [line for line in proc.stderr.splitlines() if "could not store" in line]
    assert len(warnings) == 1 and "unstored.mp4" in warnings[0], proc.stderr
    assert "full" in warnings[0]
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [r["shot_id"] for r in records] == [1, 2]
    assert all(isinstance(r["fallback"], list) for r in records)


def _analyze(server, film: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QWEN_SERVER_TOKEN=server.api_key)
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "analyze", str(film), "--server", server.url]
        + ["--out", str(out), "--batch-size", "2", "-q", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_trailer_vocabulary_end_to_end(server, tmp_path: Path) -> None:
    """The pipeline's 38-attribute file through the real CLI and the real server (which only
    knows the six): every shot comes back with all 38, in the file's order, in every output."""
    from qwen_server.contract.vocabulary import load_vocabulary_file

    vocab_file = REPO / "examples" / "trailer_attributes.yaml"
    names = list(load_vocabulary_file(vocab_file)[0].names)
    film = make_film(
        tmp_path / "trailer.mp4",
        [ShotSpec(frames=20, pattern="bars"), ShotSpec(frames=20, brightness=0.1)],
        size=(160, 120),
    )
    out = tmp_path / "out"
    proc = _analyze(server, film.path, out, "--attributes", str(vocab_file))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert list(r["attributes"]) == names
        assert all(0.0 <= v <= 1.0 for v in r["attributes"].values())
    header = (out / "shots.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c in names] == names
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["attributes"]) == names
    # The editor files written at the end: the report and a timeline with a clip per shot.
    import opentimelineio as otio

    assert '"src":"../trailer.mp4"' in (out / "report.html").read_text()  # plays the film
    timeline = otio.adapters.read_from_file(str(out / "timeline.otio"))
    clips = list(timeline.find_clips())
    assert len(clips) == 2
    assert [c.markers[0].metadata["qwen"]["shot_id"] for c in clips] == [1, 2]
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {server.api_key}"}
    ) as client:
        detail = client.get("/sessions/trailer.mp4").json()
    assert detail["attributes"] == names
    assert all(s["evidence"]["humor"] == [] for s in detail["shots"])  # the model alone

    # Names the server does not know: a clear error naming the attribute, nothing half-done.
    bad = _analyze(server, film.path, tmp_path / "bad", "--attributes", "suspense,humor")
    assert bad.returncode != 0
    assert "humor" in bad.stderr and "vocabulary" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
