"""A film job survives ``kill -9`` of the real ``qwen-server`` process: restarted on the same
store and jobs folder, the job resumes and completes, and its session holds exactly the shots
of an uninterrupted pass (the client's own ``shots`` extraction of the same film and options),
none lost, none doubled. Decoding runs in two worker processes (``jobs.decode_workers``), so the
kill also leaves orphaned workers behind, which must stop by themselves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.media.probe import probe
from client.pipeline.run import extract
from qwen_server.jobs.models import JobOptions
from tests.conftest import REPO_ROOT, TEST_API_KEY
from tests.film_factory import ShotSpec, make_film

pytestmark = pytest.mark.slow

DEADLINE_S = 300.0
HEADERS = {"Authorization": f"Bearer {TEST_API_KEY}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tiny_model_dir: Path, tmp: Path, media: Path, port: int, log: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_")}
    env.update(
        QWEN_SERVER_API_KEYS=TEST_API_KEY,
        QWEN_JOBS__DIR=str(tmp / "jobs"),
        QWEN_JOBS__MEDIA_ROOTS=json.dumps([str(media)]),
        QWEN_JOBS__BATCH_SIZE="1",  # one shot per batch: the kill lands between batches
        QWEN_JOBS__IN_FLIGHT="1",
        QWEN_JOBS__DECODE_WORKERS="2",  # chunked decode in worker processes
    )
    cmd = [sys.executable, "-m", "qwen_server", "--model", str(tiny_model_dir)]
    cmd += ["--device", "cpu", "--port", str(port), "--max-batch-size", "1"]
    cmd += ["--store", str(tmp / "sessions.sqlite3")]
    out = (tmp / log).open("wb")
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _poll(url: str, path: str, pred: Any, what: str, proc: subprocess.Popen) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}) before {what}")
        try:
            r = httpx.get(url + path, headers=HEADERS, timeout=10)
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 200 and pred(r.json()):
            return r.json()
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def test_kill_9_mid_job_then_restart_completes_with_exactly_the_shots(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    looks = [(0.8, "bars"), (0.2, "checker"), (0.6, "circles"), (0.9, "noise")]
    specs = [
        ShotSpec(frames=16, brightness=looks[i % 4][0], pattern=looks[i % 4][1], audio=None)
        for i in range(24)
    ]
    film = make_film(media / "reel.mp4", specs, size=(160, 120))
    options = JobOptions(audio=False)
    # The uninterrupted pass: the client's own extraction of the same film and options.
    reference = extract(probe(film.path), tmp_path / "reference", options.extract_options())
    expected = [(r["shot_id"], r["start_time"], r["end_time"]) for r in reference.records]
    assert len(expected) == 24

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tiny_model_dir, tmp_path, media, port, "first.log")
    try:
        _poll(url, "/jobs", lambda body: True, "the first server", proc)
        r = httpx.post(url + "/jobs", json={"path": "reel.mp4", "audio": False}, headers=HEADERS)
        assert r.status_code == 202, r.text
        jid, sid = r.json()["job_id"], r.json()["session_id"]
        before = _poll(
            url,
            f"/jobs/{jid}",
            lambda s: s["shots_analysed"] >= 2 or s["state"] in ("done", "failed"),
            "two analysed shots",
            proc,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert before["state"] in ("decoding", "analysing"), before  # killed mid-job
    assert before["shots_analysed"] < 24

    proc = _start(tiny_model_dir, tmp_path, media, port, "second.log")
    try:
        status = _poll(
            url,
            f"/jobs/{jid}",
            lambda s: s["state"] in ("done", "failed", "cancelled"),
            "the resumed job to finish",
            proc,
        )
        assert status["state"] == "done", status
        assert status["shots_found"] == status["shots_analysed"] == 24
        session = httpx.get(url + f"/sessions/{sid}", headers=HEADERS, timeout=30).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert session["shot_count"] == 24
    got = [(s["shot_id"], s["start_time"], s["end_time"]) for s in session["shots"]]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (gid, gs, ge), (_eid, es, ee) in zip(got, expected, strict=True):
        assert gs == pytest.approx(es, abs=1e-6) and ge == pytest.approx(ee, abs=1e-6), gid
    lines = (tmp_path / "jobs" / jid / "results" / "shots.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["shot_id"] for line in lines) == list(range(1, 25))
    log = (tmp_path / "second.log").read_text()
    assert f"resuming job {jid}" in log
    # Both passes decoded in two worker processes (no fallback to the one pass).
    assert "decoding in one pass" not in log + (tmp_path / "first.log").read_text()
