"""``scripts/bench_contention.py`` for real: pinned decodes of a generated film, one table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.film_factory import ShotSpec, make_film

REPO = Path(__file__).resolve().parents[2]
ROWS = (
    "1 thread, alone",
    "1 thread, Python busy loop on another core",
    "1 thread, numpy memory loop on another core",
    "slice threads, all cores, alone",
)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin to")
def test_contention_table_has_every_row_with_figures(tmp_path: Path) -> None:
    film = make_film(tmp_path / "film.mp4", [ShotSpec(frames=40), ShotSpec(frames=40)]).path
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_contention.py"), str(film), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for row in ROWS:
        line = next((x for x in out.splitlines() if x.startswith(row + " ")), None)
        assert line is not None, f"no row {row!r} in:\n{out}"
        wall, cpu = re.findall(r"\d+\.\d+", line[len(row) :])[:2]
        assert float(wall) > 0 and float(cpu) > 0
    alone = next(x for x in out.splitlines() if x.startswith(ROWS[0] + " "))
    assert alone.rstrip().endswith("+0%")
    # The neighbours were killed: none outlives the script. Matched by the script's own tag, not
    # by "while True:" (CI failed once on an unrelated busy loop of the machine's).
    left = subprocess.run(
        ["pgrep", "-f", "bench_contention neighbour"], capture_output=True, text=True
    ).stdout
    assert not left.strip(), left


def test_contention_refuses_a_missing_film(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_contention.py"), str(tmp_path / "no.mp4")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no such film" in result.stderr and "no.mp4" in result.stderr
