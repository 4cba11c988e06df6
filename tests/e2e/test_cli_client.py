"""The ``qwen-client`` CLI as a user runs it: real subprocesses, real HTTP on loopback.

Covers the shots/analyze/health commands, one-line errors with their exit codes, and resuming
a run that was killed with SIGKILL (compared byte for byte with an uninterrupted run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import as_in_a_terminal, run_cli
from tests.fake_analysis_server import FakeAnalysisServer, free_port
from tests.film_factory import FilmTruth, ShotSpec, make_film, standard_shots

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token"
FINAL_FILES = ("shots.jsonl", "shots.csv", "summary.json")


def cli(*args: str, token: str | None = TOKEN, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, token=token, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, QWEN_SERVER_TOKEN=TOKEN)
    return subprocess.Popen(
        [sys.executable, "-m", "client.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_in_a_terminal,
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [
        line
        for line in err.splitlines()
        if line.startswith("qwen-client:") and not line.startswith("qwen-client: WARNING:")
    ]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("e2e") / "film.mp4", standard_shots())


@pytest.fixture
def server() -> Iterator[FakeAnalysisServer]:
    with FakeAnalysisServer(token=TOKEN) as s:
        yield s


def test_shots_command_writes_frames_features_and_a_table(film: FilmTruth, tmp_path: Path) -> None:
    out = tmp_path / "shots"
    proc = cli("shots", str(film.path), "--out", str(out), token=None)
    assert proc.returncode == 0, proc.stderr
    assert "shot  start" in proc.stdout and f"{len(film.shots)} shots" in proc.stdout
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [r["start_frame"] for r in records[1:]] == list(film.cut_frames)
    for r in records:
        assert len(r["images"]) == 5 and all((out / p).is_file() for p in r["images"])
        assert "caption" not in r and r["audio_features"]["mfcc_mean"]
    assert len(list((out / "frames").glob("*.jpg"))) == 5 * len(film.shots)
    assert (out / "shots.csv").read_text().startswith("shot_id,start_frame,end_frame")
    # Running it again finds the run complete and leaves the results as they are.
    before = [(out / f).read_bytes() for f in FINAL_FILES]
    again = cli("shots", str(film.path), "--out", str(out), "--quiet", token=None)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert [(out / f).read_bytes() for f in FINAL_FILES] == before


def test_shots_command_merges_a_too_short_last_shot(tmp_path: Path) -> None:
    # The detector reports a noise cut at frame 57 of this film; a 3-frame last shot is under
    # the default minimum shot length (0.6 s = 15 frames) and is merged into the one before.
    specs = [ShotSpec(frames=30, brightness=0.8), ShotSpec(frames=30, brightness=0.1)]
    truth = make_film(tmp_path / "f2.mp4", specs)
    out = tmp_path / "o2"
    proc = cli("shots", str(truth.path), "--out", str(out), "--quiet", token=None)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert len(records) == 2, [(r["start_frame"], r["end_frame"]) for r in records]
    cut = records[1]["start_frame"]
    assert abs(cut - 30) <= 1
    assert [(r["start_frame"], r["end_frame"]) for r in records] == [(0, cut - 1), (cut, 59)]
    assert all(r["frame_count"] >= 15 for r in records)


def test_analyze_and_health_against_a_server(film: FilmTruth, server, tmp_path: Path) -> None:
    health = cli("health", "--server", server.url)
    assert health.returncode == 0 and "ok" in health.stdout and "token=ok" in health.stdout
    assert cli("health", "--server", server.url, token="nope").returncode == 4
    proc = cli("analyze", str(film.path), "--server", server.url, "--out", str(tmp_path), "-q")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(film.shots)} shots" in proc.stdout and TOKEN not in proc.stdout + proc.stderr
    assert server.recorded.sessions == {"film.mp4": list(range(1, len(film.shots) + 1))}
    rows = (tmp_path / "shots.csv").read_text().splitlines()
    assert len(rows) == len(film.shots) + 1 and "suspense" in rows[0]


def test_errors_are_one_line_with_exit_codes(film: FilmTruth, server, tmp_path: Path) -> None:
    wrong = cli(
        "analyze",
        str(film.path),
        "-s",
        server.url,
        "--out",
        str(tmp_path / "a"),
        "-q",
        token="wrong-token",
    )
    assert wrong.returncode == 4 and "401" in one_line_error(wrong)
    assert "wrong-token" not in wrong.stdout + wrong.stderr  # the token is never printed
    dead = f"http://127.0.0.1:{free_port()}"
    down = cli(
        "analyze",
        str(film.path),
        "-s",
        dead,
        "--out",
        str(tmp_path / "b"),
        "-q",
        "--retry-for",
        "1",
    )
    assert down.returncode == 3 and "cannot reach any server" in one_line_error(down)
    assert cli("health", "-s", dead).returncode == 3
    missing = cli("analyze", str(tmp_path / "nope.mp4"), "-s", server.url, "--out", str(tmp_path))
    assert missing.returncode == 2 and "not found" in one_line_error(missing)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(
    film: FilmTruth, server, tmp_path: Path
) -> None:
    common = ["--server", server.url, "--batch-size", "1", "--in-flight", "1", "-q"]
    ref = tmp_path / "ref"
    assert cli("analyze", str(film.path), *common, "--out", str(ref)).returncode == 0
    reference = [(ref / f).read_bytes() for f in FINAL_FILES]
    answered_before = len(server.shot_ids)

    # Second run: the server answers two batches, then holds the third until we have killed the
    # client, so the kill lands mid-run whatever the machine's speed.
    out = tmp_path / "killed"
    server.behaviour.hold_after = server.recorded.answered + 2
    proc = start_cli("analyze", str(film.path), *common, "--out", str(out))
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while len(lines) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the client never wrote two batches"
        time.sleep(0.02)
        path = out / "shots.jsonl"
        # Complete lines only: a line being appended right now must not count (or be parsed).
        lines = path.read_text().split("\n")[:-1] if path.exists() else []
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # As if the kill had also torn the line being written.
    with (out / "shots.jsonl").open("a") as f:
        f.write('{"shot_id": 3, "start_frame": 1')
    done = {json.loads(line)["shot_id"] for line in lines}
    server.behaviour.hold_after = None
    server.behaviour.release.set()

    first_rerun_request = len(server.recorded.arrivals)
    again = cli("analyze", str(film.path), *common, "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert f"({len(done)} from an earlier run)" in again.stdout
    resent = [i for ids in server.recorded.arrivals[first_rerun_request:] for i in ids]
    assert not set(resent) & done  # nothing analysed twice
    assert sorted(resent) == sorted(set(range(1, len(film.shots) + 1)) - done)  # nothing lost
    assert [(out / f).read_bytes() for f in FINAL_FILES] == reference
    assert answered_before == len(film.shots)

    # A resume with other settings is refused; --force starts over.
    other = cli("analyze", str(film.path), *common, "--out", str(out), "--frames-per-shot", "3")
    assert other.returncode == 2 and "different film or settings" in one_line_error(other)
    forced = cli(
        "analyze", str(film.path), *common, "--out", str(out), "--frames-per-shot", "3", "--force"
    )
    assert forced.returncode == 0, forced.stderr


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path: Path, server) -> None:
    film = make_film(
        tmp_path / "f.mp4",
        [
            ShotSpec(frames=20, brightness=b, pattern=p)
            for b, p in [(0.8, "bars"), (0.3, "circles"), (0.9, "checker"), (0.2, "gradient")]
        ],
    )
    server.behaviour.hold_after = 1
    out = tmp_path / "out"
    proc = start_cli(
        "analyze",
        str(film.path),
        "-s",
        server.url,
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--in-flight",
        "1",
        "-q",
    )
    deadline = time.monotonic() + 120
    while server.requests < 2:  # the second batch is being held by the server
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the client never sent its second batch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    server.behaviour.hold_after = None
    again = cli("analyze", str(film.path), "-s", server.url, "--out", str(out), "-q")
    assert again.returncode == 0 and "1 from an earlier run" in again.stdout
