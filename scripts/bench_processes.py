"""Timing whole processes for ``bench_client.py``: wall and CPU seconds, the load other processes
put on the machine meanwhile, an optional wait for a quiet machine, the environment of a first
run, and an older revision's client to compare with.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Timing:
    """One measured process (the fastest of the repeats)."""

    wall: float
    cpu: float  # user + system seconds of the process and its children
    others: float | None = None  # cores other processes kept busy meanwhile (Linux)

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy the whole time)."""
        return self.cpu / self.wall if self.wall else 0.0


@dataclass(frozen=True)
class Tree:
    """A client source tree to run: the working tree or an older revision."""

    name: str
    root: Path


def machine_busy() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class IdleWait:
    """Before each timed run, wait (at most ``limit`` seconds) until the machine has been at
    least 90 % idle for 2 s: on a shared machine this starts runs in quiet moments."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.runs = 0
        self.gave_up = 0

    def __call__(self) -> None:
        if self.limit <= 0 or machine_busy() is None:
            return
        self.runs += 1
        cores = os.cpu_count() or 1
        deadline, quiet = time.monotonic() + self.limit, 0
        while time.monotonic() < deadline:
            before = machine_busy() or 0.0
            time.sleep(1.0)
            quiet = quiet + 1 if (machine_busy() or 0.0) - before <= 0.1 * cores else 0
            if quiet >= 2:
                return
        self.gave_up += 1


WAIT_FOR_IDLE = IdleWait(0.0)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[Timing, str]:
    """Run ``cmd`` to the end; its wall and CPU time, the other processes' CPU use meanwhile,
    and its stdout (exits on failure)."""
    WAIT_FOR_IDLE()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    busy_after = machine_busy()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = None
    if busy is not None and busy_after is not None and wall > 0:
        others = max(0.0, (busy_after - busy - cpu) / wall)
    return Timing(wall, cpu, others), proc.stdout


def fastest(runs: list[Timing]) -> Timing:
    """The run with the shortest wall time (the least disturbed by other processes)."""
    return min(runs, key=lambda t: t.wall)


def baseline_tree(rev: str, into: Path) -> Tree:
    """``client`` and ``qwen_server`` of revision ``rev``, extracted under ``into``."""
    root = into / f"rev-{rev}"
    root.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "client", "qwen_server"],
        capture_output=True,
        check=True,
    ).stdout
    tar_path = into / f"{rev}.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(root, filter="data")
    return Tree(rev, root)


def fresh_env(cache: Path) -> dict[str, str]:
    """The environment of a first run (empty bytecode and numba caches under ``cache``),
    also used by the warm runs after it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    (cache / "pycache").mkdir(parents=True)
    (cache / "numba").mkdir()
    env["PYTHONPYCACHEPREFIX"] = str(cache / "pycache")
    env["NUMBA_CACHE_DIR"] = str(cache / "numba")
    return env
