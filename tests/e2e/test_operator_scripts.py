"""The operator scripts for real: setup (install skipped), start, health, analyse, drain, stop."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.film_factory import ShotSpec, make_film
from tests.payloads import shot

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ops_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the scripts: private key home, run dir, store, port; install skipped."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QWEN_") and k not in ("NEBIUS_API_KEY",)
    }
    env.update(
        SKIP_INSTALL="1",
        VENV=sys.prefix,  # the scripts use the environment running these tests
        QWEN_HOME=str(tmp_path / "home"),
        RUN_DIR=str(tmp_path / "run"),
        QWEN_STORE__PATH=str(tmp_path / "sessions.sqlite3"),
        QWEN_SERVER__PORT=str(_free_port()),
        QWEN_MODEL__DEVICE="cpu",
        START_TIMEOUT="240",
    )
    return env


def sh(
    script: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_setup_makes_a_private_key_file_once(ops_env) -> None:
    first = sh("setup.sh", "--no-model", env=ops_env)
    assert first.returncode == 0, first.stderr
    keyfile = Path(ops_env["QWEN_HOME"]) / "api_key"
    assert "created an API key file" in first.stdout and str(keyfile) in first.stdout
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    key = keyfile.read_text()
    assert key.strip() not in first.stdout + first.stderr  # the key itself is never printed
    second = sh("setup.sh", "--no-model", env=ops_env)
    assert second.returncode == 0 and "API key file exists" in second.stdout
    assert keyfile.read_text() == key


def test_start_health_analyse_metrics_stop(ops_env, tiny_model_dir, tmp_path) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    key = (Path(ops_env["QWEN_HOME"]) / "api_key").read_text().strip()
    url = f"http://127.0.0.1:{ops_env['QWEN_SERVER__PORT']}"
    pid_file = Path(ops_env["RUN_DIR"]) / "qwen-server.pid"
    started = sh("start_server.sh", "--model", str(tiny_model_dir), env=ops_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert pid_file.is_file()
        again = sh("start_server.sh", "--model", str(tiny_model_dir), env=ops_env)
        assert again.returncode == 0 and "already running" in again.stdout

        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok"

        film = make_film(
            tmp_path / "film.mp4",
            [ShotSpec(frames=30, brightness=0.8), ShotSpec(frames=30, brightness=0.1)],
        )
        out = tmp_path / "out"
        run = subprocess.run(
            [
                str(Path(sys.prefix) / "bin" / "qwen-client"),
                "analyze",
                str(film.path),
                "--server",
                url,
                "--out",
                str(out),
                "--quiet",
            ],
            env={**ops_env, "QWEN_SERVER_TOKEN": key},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        lines = (out / "shots.jsonl").read_text().splitlines()
        assert len(lines) == 2
        assert key not in run.stdout + run.stderr

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            assert httpx.get(url + "/metrics").status_code == 401
            metrics = c.get("/metrics").text
        assert 'qwen_requests_total{method="POST",route="/analyze_batch",status="200"}' in metrics
        assert "qwen_batch_size_bucket" in metrics and "qwen_shots_analyzed_total 2.0" in metrics

        log = (Path(ops_env["RUN_DIR"]) / "qwen-server.log").read_text()
        assert "POST /analyze_batch status=200" in log and "shots=2" in log
        assert key not in log
    finally:
        stopped = sh("stop_server.sh", env=ops_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not pid_file.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)
    twice = sh("stop_server.sh", env=ops_env)
    assert twice.returncode == 0 and "not running" in twice.stdout


def test_stop_drains_requests_in_flight(ops_env, tiny_model_dir) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    key = (Path(ops_env["QWEN_HOME"]) / "api_key").read_text().strip()
    url = f"http://127.0.0.1:{ops_env['QWEN_SERVER__PORT']}"
    env = {**ops_env, "QWEN_BATCHING__MAX_BATCH_SIZE": "1"}  # a long batch: many small steps
    assert sh("start_server.sh", "--model", str(tiny_model_dir), env=env).returncode == 0
    headers = {"Authorization": f"Bearer {key}"}
    result: dict[str, int] = {}

    def long_request() -> None:
        body = {"shots": [shot(i, n_frames=5) for i in range(48)]}
        result["status"] = httpx.post(
            url + "/analyze_batch", json=body, headers=headers, timeout=300
        ).status_code

    t = threading.Thread(target=long_request)
    t.start()
    try:
        for _ in range(400):  # wait until the batch is queued on the engine
            if httpx.get(url + "/health").json()["queue_depth"] > 0:
                break
            threading.Event().wait(0.02)
        stopper = subprocess.Popen(
            ["bash", str(REPO_ROOT / "scripts" / "stop_server.sh")],
            env=ops_env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        refused = None
        for _ in range(200):
            try:
                r = httpx.post(url + "/analyze", json=shot(1), headers=headers, timeout=30)
            except httpx.TransportError:
                break
            if r.status_code == 503:
                refused = r
                break
            threading.Event().wait(0.02)
        t.join(timeout=300)
        stopper.wait(timeout=120)
    finally:
        sh("stop_server.sh", env=ops_env)
    assert result.get("status") == 200, "the batch in flight must finish during the drain"
    if refused is not None:
        assert "shutting down" in refused.json()["detail"] and refused.headers["retry-after"]
    assert refused is not None, "new work during the drain must get 503"


def test_start_fails_clearly_with_log_tail(ops_env, tmp_path) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    r = sh("start_server.sh", "--model", str(empty), env=ops_env)
    assert r.returncode == 1
    assert "exited during start-up" in r.stderr and "model" in r.stderr
    assert not (Path(ops_env["RUN_DIR"]) / "qwen-server.pid").exists()


def test_start_refuses_bad_settings_before_starting(ops_env) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    r = sh("start_server.sh", env={**ops_env, "QWEN_MODEL__PLACEMENT": "sideways"})
    assert r.returncode == 2 and "model.placement" in r.stderr


def test_analyze_film_script_end_to_end(ops_env, tiny_model_dir, tmp_path) -> None:
    film = make_film(
        tmp_path / "my film.mp4",
        [
            ShotSpec(frames=25, brightness=0.9, audio="tone"),
            ShotSpec(frames=25, brightness=0.1, audio="noise"),
            ShotSpec(frames=25, brightness=0.5, audio="silence"),
        ],
    )
    out = tmp_path / "results"
    r = sh(
        "analyze_film.sh",
        str(film.path),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--",
        "--quiet",
        env=ops_env,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [row["shot_id"] for row in rows] == [1, 2, 3]
    assert rows[0]["attributes"]["darkness"] < rows[1]["attributes"]["darkness"]  # bright, dark
    assert (out / "summary.json").is_file() and (out / "shots.csv").is_file()
    # The script stopped the server it started.
    assert not (Path(ops_env["RUN_DIR"]) / "qwen-server.pid").exists()
