"""Every ``qwen-client`` run exits with its documented code, every time.

``qwen-client shots`` used to abort at exit now and then (``terminate called without an active
exception``, exit 134) after writing complete results: the librosa warm-up ran in a daemon
thread that could still be inside numba/LLVM when the interpreter shut down. The CLI now stops
and joins every thread it started on every exit path. Repeated real runs on a tiny generated
film with audio (the warm-up's path) check the exit codes of success and of early failures
(which exit while the warm-up is still busy), and that no run printed an abort.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.fake_analysis_server import FakeAnalysisServer, free_port
from tests.film_factory import FilmTruth, ShotSpec, make_film

TOKEN = "exit-codes-token"
SHOTS_RUNS = 20


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    """1.6 s, 160x120, two shots with tone and noise audio: as cheap as a run with audio gets."""
    specs = [
        ShotSpec(frames=20, brightness=0.8, pattern="bars", audio="tone"),
        ShotSpec(frames=20, brightness=0.2, pattern="checker", audio="noise"),
    ]
    return make_film(tmp_path_factory.mktemp("exit") / "tiny.mp4", specs, size=(160, 120))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnalysisServer]:
    with FakeAnalysisServer(token=TOKEN) as s:
        yield s


def _cli(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, token=token, timeout=120)


def _check_runs(results: list[subprocess.CompletedProcess[str]], expected: int) -> None:
    codes = Counter(r.returncode for r in results)
    bad = [r for r in results if r.returncode != expected]
    detail = bad[0].stderr[-2000:] if bad else ""
    assert codes == {expected: len(results)}, f"exit codes {dict(codes)}; first bad:\n{detail}"
    for r in results:
        assert "terminate called" not in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_shots_exits_0_every_time(film: FilmTruth, tmp_path: Path) -> None:
    results = [
        _cli("shots", str(film.path), "--out", str(tmp_path / f"run{i}"), "-q")
        for i in range(SHOTS_RUNS)
    ]
    _check_runs(results, 0)
    first = (tmp_path / "run0" / "shots.jsonl").read_bytes()
    assert first.count(b"\n") == len(film.shots)
    for i in range(1, SHOTS_RUNS):  # same film, same options: the same results
        assert (tmp_path / f"run{i}" / "shots.jsonl").read_bytes() == first


@pytest.mark.slow
def test_analyze_exit_codes_are_stable(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    ok = [
        _cli("analyze", str(film.path), "-s", server.url, "--out", str(tmp_path / f"ok{i}"), "-q")
        for i in range(3)
    ]
    _check_runs(ok, 0)
    # Failures that end the run early, while the librosa warm-up may still be running.
    wrong_token = [
        _cli(
            "analyze",
            str(film.path),
            "-s",
            server.url,
            "--out",
            str(tmp_path / f"auth{i}"),
            "-q",
            token="wrong",
        )
        for i in range(3)
    ]
    _check_runs(wrong_token, 4)
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = [
        _cli(
            "analyze",
            str(film.path),
            "-s",
            dead,
            "--out",
            str(tmp_path / f"dead{i}"),
            "-q",
            "--retry-for",
            "0",
        )
        for i in range(3)
    ]
    _check_runs(unreachable, 3)
    missing = [
        _cli("shots", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "m")) for _ in range(2)
    ]
    _check_runs(missing, 2)


def _threads_left_by(argv: list[str]) -> tuple[int, list[str]]:
    """Run the CLI in-process; its exit code and the threads it left running."""
    from client.cli import run

    before = set(threading.enumerate())
    code = run(argv)
    return code, [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def test_no_thread_outlives_a_command(film: FilmTruth, tmp_path: Path) -> None:
    """The cause itself, checked directly: when ``run`` returns, every thread the command
    started (warm-up, decoding, audio, workers, posting) has ended, on success and failure."""
    code, left = _threads_left_by(["shots", str(film.path), "--out", str(tmp_path / "a"), "-q"])
    assert (code, left) == (0, [])
    dead = f"http://127.0.0.1:{free_port()}"
    argv = ["analyze", str(film.path), "-s", dead, "--out", str(tmp_path / "b"), "-q"]
    code, left = _threads_left_by([*argv, "--retry-for", "0"])
    assert (code, left) == (3, [])
