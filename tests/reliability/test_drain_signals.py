"""The real ``qwen-server`` process under SIGTERM: a drain that shows, and a second signal that
really ends the process at once (README "Run the server")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, TEST_API_KEY
from tests.payloads import shot

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url + "/health", timeout=10)
    except httpx.TransportError:
        return None


def _wait(predicate, what: str, deadline_s: float = 180):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_drain_is_observable_and_a_second_sigterm_exits_at_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_")}
    env.update(QWEN_SERVER_API_KEYS=TEST_API_KEY, QWEN_SERVER__SHUTDOWN_TIMEOUT_S="300")
    cmd = [sys.executable, "-m", "qwen_server", "--model", str(tiny_model_dir)]
    cmd += ["--device", "cpu", "--port", str(port), "--max-batch-size", "1"]
    cmd += ["--store", str(tmp_path / "s.sqlite3")]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    outcome: dict[str, object] = {}
    try:
        _wait(lambda: (r := _health(url)) is not None and r.status_code == 200, "ready")
        # 24 shots one at a time on CPU: many seconds of work for the engine.
        batch = {"shots": [shot(i, n_frames=2) for i in range(24)]}

        def post() -> None:
            try:
                r = httpx.post(
                    url + "/analyze_batch",
                    json=batch,
                    headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                    timeout=600,
                )
                outcome["status"] = r.status_code
            except httpx.TransportError as exc:
                outcome["error"] = type(exc).__name__

        client = threading.Thread(target=post, daemon=True)
        client.start()
        _wait(lambda: (r := _health(url)) and r.json()["queue_depth"] >= 10, "queued work")

        proc.send_signal(signal.SIGTERM)
        drained = _wait(
            lambda: (r := _health(url)) is not None and r.status_code == 503 and r, "draining"
        )
        body = drained.json()
        assert body["status"] == "draining", body
        assert drained.headers["retry-after"] == "5"
        assert TEST_API_KEY not in drained.text and str(tmp_path) not in drained.text
        assert body["queue_depth"] >= 2, "the batch must still be running for this test"
        # New work is refused while draining.
        r = httpx.post(
            url + "/analyze", json=shot(99), headers={"Authorization": f"Bearer {TEST_API_KEY}"}
        )
        assert r.status_code == 503 and r.headers["retry-after"]

        proc.send_signal(signal.SIGTERM)
        # Exits at once: it does not finish the batch (which would answer 200).
        assert proc.wait(timeout=60) == -signal.SIGTERM
        client.join(timeout=60)
        assert "status" not in outcome, outcome
        assert outcome.get("error"), outcome
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "draining" in text and "again: exiting now" in text, text[-2000:]
