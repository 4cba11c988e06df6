"""``qwen-client shots --workers N`` as a user runs it: the same results folder as one worker,
Ctrl-C leaves no worker process behind, and the interrupted run resumes with workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import REPO, as_in_a_terminal, run_cli
from tests.film_factory import ShotSpec, make_film

PATTERNS = ("bars", "checker", "circles", "noise", "gradient")


def _film(path: Path, shots: int) -> Path:
    specs = [
        ShotSpec(
            frames=40 + 13 * (i % 7),
            brightness=0.2 + 0.6 * ((i * 0.37) % 1.0),
            pattern=PATTERNS[i % len(PATTERNS)],
            audio=("tone", "noise", "silence")[i % 3],
            tone_hz=220.0 + 110 * (i % 4),
        )
        for i in range(shots)
    ]
    make_film(path, specs, size=(128, 96), gop=50)
    return path


def _results(out: Path) -> tuple[str, dict[str, bytes]]:
    frames = {p.name: p.read_bytes() for p in sorted((out / "frames").iterdir())}
    return (out / "shots.jsonl").read_text(), frames


def test_two_workers_write_the_one_worker_results(tmp_path: Path) -> None:
    film = _film(tmp_path / "film.mp4", 16)
    one = run_cli("shots", str(film), "--out", str(tmp_path / "one"), "--quiet")
    assert one.returncode == 0, one.stderr
    two = run_cli("shots", str(film), "--out", str(tmp_path / "two"), "--workers", "2", "-q")
    assert two.returncode == 0, two.stderr
    assert _results(tmp_path / "two") == _results(tmp_path / "one")
    assert (tmp_path / "two" / "shots.csv").read_text() == (
        tmp_path / "one" / "shots.csv"
    ).read_text()


def test_bad_worker_count_is_a_usage_error(tmp_path: Path) -> None:
    film = _film(tmp_path / "film.mp4", 2)
    result = run_cli("shots", str(film), "--out", str(tmp_path / "o"), "--workers", "0")
    assert result.returncode == 2
    assert "--workers" in result.stderr


def _group(pgid: int) -> list[str]:
    """Command lines of the live processes of a process group (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            with contextlib.suppress(OSError):
                pids.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return pids


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_ctrl_c_stops_every_worker_and_the_run_resumes(tmp_path: Path) -> None:
    # Long enough that the run is still going when the signal lands on a loaded machine: after
    # the first shots the parent still has ~100 shots to prepare and write.
    film = _film(tmp_path / "long.mp4", 100)
    reference = run_cli("shots", str(film), "--out", str(tmp_path / "ref"), "--quiet")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    args = [sys.executable, "-m", "client.cli", "shots", str(film), "--out", str(out)]
    proc = subprocess.Popen(
        [*args, "--workers", "2", "--quiet"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=as_in_a_terminal,
    )
    try:
        jsonl = out / "shots.jsonl"

        def started() -> bool:
            lines = jsonl.read_text().count("\n") if jsonl.exists() else 0
            return lines >= 2 and len(_group(proc.pid)) >= 3  # the CLI and its 2 workers

        _wait_for(started, 120, "the workers and the first shots")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    # No decode worker outlived the command (they were joined before it exited). The
    # multiprocessing resource tracker ends on its own once the command's pipe to it closed
    # (an ending process has an empty command line).
    assert [c for c in _group(proc.pid) if c and "resource_tracker" not in c] == []
    _wait_for(lambda: not _group(proc.pid), 30, "the resource tracker to end")
    written = jsonl.read_text().count("\n")
    reference_lines = (tmp_path / "ref" / "shots.jsonl").read_text().count("\n")
    assert 2 <= written < reference_lines
    resumed = run_cli("shots", str(film), "--out", str(out), "--workers", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(out) == _results(tmp_path / "ref")
