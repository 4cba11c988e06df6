"""``scripts/gpu_check.sh --cpu``: the device check's dry run, so the script is known to work
before a GPU machine is lent (its every step, on the tiny model, at tiny batch sizes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_check_dry_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ)
    env.update(
        PYTHON=sys.executable,
        OUT=str(out),
        GPU_CHECK_WORK=str(tmp_path / "work"),
        GPU_CHECK_WHEELS=str(tmp_path / "no-wheels"),  # nothing to install here
        GPU_CHECK_BATCHES="2,4",
        GPU_CHECK_SHOTS="4",
    )
    run = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--cpu"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    table = (out / "gpu_check.md").read_text()
    assert table in run.stdout  # printed and written: the same table
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    checks = [c[0] for c in cells]
    assert "machine" in checks and "xgrammar" in checks and "attention" in checks
    gpu_tests = next(c for c in cells if c[0] == "pytest" and c[1].startswith("gpu-marked"))
    assert "0 failed" in gpu_tests[2]  # they skip on the CPU; the step itself ran
    drill = next(c for c in cells if c[1].startswith("OOM drill") or c[0] == "OOM drill")
    assert "failed" not in drill[2] or "0 failed" in drill[2], drill
    benches = [c for c in cells if c[0] == "bench_server"]
    labels = {c[1].split(", batch")[0] for c in benches}
    assert labels == {
        "video, grammar off",
        "video, grammar on",
        "images, grammar off",
        "images, grammar on",
    }
    assert len(benches) == 8  # 4 combinations x 2 batch sizes
    assert all(float(c[3]) > 0 for c in benches)  # shots/s measured
    assert sum(c[0] == "one-at-a-time" for c in cells) == 2  # video, grammar off and on
    assert any("the engine's pick" in c[2] for c in cells if c[0] == "xgrammar mask")
    assert cells[-1][0] == "gpu_check.sh" and cells[-1][2] == "all steps passed"
