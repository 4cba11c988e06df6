"""Drill: the only server goes away mid-film and comes back; ``qwen-client analyze`` waits.

Real CLI subprocesses against ``tests/fake_analysis_server.py`` (FastAPI + uvicorn on
loopback). The server is stopped while the client is mid-film, the test waits until the client
says "waiting for server" on stderr, then a new server is started on the same port: the run
must complete with every shot exactly once. With ``--retry-for 2`` and no server coming back,
the client must exit 3 (before the subprocess deadline, i.e. in bounded time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_analysis_server import FakeAnalysisServer, free_port
from tests.film_factory import FilmTruth, ShotSpec, make_film

REPO = Path(__file__).resolve().parents[2]
TOKEN = "restart-token"
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    specs = [
        ShotSpec(frames=15, brightness=b, pattern=p, audio=None)
        for b, p in [(0.8, "bars"), (0.2, "checker"), (0.6, "circles"), (0.9, "noise")]
    ]
    return make_film(tmp_path_factory.mktemp("restart") / "film.mp4", specs, size=(160, 120))


def _start_cli(args: list[str], stderr_path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, QWEN_SERVER_TOKEN=TOKEN)
    return subprocess.Popen(
        [sys.executable, "-m", "client.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], condition, what: str) -> None:
    """Poll ``condition`` until true; fail if the client exits first or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the client exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _analyze_args(film: FilmTruth, url: str, out: Path, *extra: str) -> list[str]:
    return [
        "analyze",
        str(film.path),
        "--server",
        url,
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--in-flight",
        "1",
        "--no-audio",
        "-q",
        *extra,
    ]


def test_a_single_server_restart_does_not_abort_the_film(film: FilmTruth, tmp_path: Path) -> None:
    port = free_port()
    out, err = tmp_path / "out", tmp_path / "stderr.txt"
    first = FakeAnalysisServer(token=TOKEN, port=port).start()
    try:
        first.behaviour.hold_after = 1  # answer one batch, hold the next until stopped
        proc = _start_cli(_analyze_args(film, first.url, out, "--retry-for", "60"), err)
        _wait_for(proc, lambda: first.requests >= 2, "the second batch to reach the server")
    finally:
        first.stop()  # the held batch is answered during shutdown; then connections are refused
    _wait_for(proc, lambda: "waiting for server" in err.read_text(), "'waiting for server'")
    with FakeAnalysisServer(token=TOKEN, port=port) as second:
        stdout, _ = proc.communicate(timeout=DEADLINE_S)
        stderr = err.read_text()
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert second.recorded.answered >= 1
        done_before = first.shot_ids
        assert sorted(done_before + second.shot_ids) == list(range(1, len(film.shots) + 1))
    ids = [json.loads(line)["shot_id"] for line in (out / "shots.jsonl").read_text().splitlines()]
    assert ids == list(range(1, len(film.shots) + 1))
    assert f"{len(film.shots)} shots" in stdout


def test_no_server_at_all_exits_3_after_retry_for(film: FilmTruth, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    err = tmp_path / "stderr.txt"
    proc = _start_cli(_analyze_args(film, dead, tmp_path / "out", "--retry-for", "2"), err)
    proc.communicate(timeout=DEADLINE_S)
    stderr = err.read_text()
    assert proc.returncode == 3, stderr
    assert "waiting for server" in stderr and "cannot reach any server" in stderr
    assert "Traceback" not in stderr


def test_a_server_that_dies_for_good_exits_3_after_retry_for(
    film: FilmTruth, tmp_path: Path
) -> None:
    out, err = tmp_path / "out", tmp_path / "stderr.txt"
    server = FakeAnalysisServer(token=TOKEN).start()
    try:
        server.behaviour.hold_after = 1
        proc = _start_cli(_analyze_args(film, server.url, out, "--retry-for", "2"), err)
        _wait_for(proc, lambda: server.requests >= 2, "the second batch to reach the server")
    finally:
        server.stop()
    proc.communicate(timeout=DEADLINE_S)
    stderr = err.read_text()
    assert proc.returncode == 3, stderr
    assert "waiting for server" in stderr and "no server left" in stderr
    assert "Traceback" not in stderr
    # What was answered before the server died is kept for a resume.
    ids = [json.loads(line)["shot_id"] for line in (out / "shots.jsonl").read_text().splitlines()]
    assert ids == server.shot_ids
