"""``qwen-server --ray`` as an operator runs it: one command, the repo's config.yaml, a local
Ray cluster (CPU only, 2 CPUs), the tiny checkpoint; SIGTERM drains it and the process exits 0
leaving no Ray process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import REPO_ROOT, TEST_API_KEY
from tests.payloads import image_b64

pytest.importorskip("ray.serve", reason="the ray extra is not installed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_qwen_server_ray_serves_then_drains_on_sigterm(tiny_model_dir: Path, tmp_path: Path):
    port = _free_port()
    env = dict(
        os.environ,
        QWEN_SERVER_API_KEYS=TEST_API_KEY,
        QWEN_RAY__NUM_CPUS="2",
        QWEN_RAY__CPUS_PER_REPLICA="0.5",
        QWEN_RAY__OBJECT_STORE_MB="128",
        QWEN_MODEL__GENERATE_THREADS="1",
    )
    cmd = [sys.executable, "-m", "qwen_server", "--ray", "--config", str(REPO_ROOT / "config.yaml")]
    cmd += ["--model", str(tiny_model_dir), "--device", "cpu", "--port", str(port)]
    cmd += ["--store", str(tmp_path / "s.db")]
    # The log goes to a file: Ray writes a lot, and a full pipe nobody reads would block the
    # server's main thread.
    log = tmp_path / "qwen-server.log"
    stderr = log.open("w")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert children, "no Ray process started"
        body = {"shots": [{"shot_id": 7, "images": [image_b64(color=(40, 40, 40))] * 2}]}
        r = httpx.post(
            url + "/analyze_batch",
            json=body,
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["shot_id"] == 7 and r.headers["x-qwen-engine-replica"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        err = log.read_text()
        assert proc.returncode == 0, err[-3000:]
        assert "draining the Serve application" in err and "stopped" in err
        gone_by = time.monotonic() + 60
        while time.monotonic() < gone_by and any(psutil.pid_exists(p) for p in children):
            time.sleep(0.2)  # the raylet and workers exit after the driver disconnects
        left = [p for p in children if psutil.pid_exists(p)]
        assert not left, f"Ray processes left: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        stderr.close()
