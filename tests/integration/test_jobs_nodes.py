"""Film jobs shared by two real ``qwen-server`` processes (two "nodes") on one PostgreSQL
database and one jobs folder (the shared storage a farm mounts on every node):

* a job is visible with live progress on the node that does not run it (status and SSE), its
  results download there, a cancel asked there stops it on its owner, and its files can be
  purged from there;
* ``kill -9`` of the node running a job: the other node claims it once its lease runs out and
  completes it, and the session holds exactly the shots of an uninterrupted pass (the client's
  own extraction of the same film and options, as in test_jobs_restart.py).

Every wait polls an observable state; the lease is kept short (``jobs.lease_s`` 4 s).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.media.probe import probe
from client.pipeline.run import extract
from qwen_server.jobs.models import JobOptions
from tests.conftest import REPO_ROOT, TEST_API_KEY, new_database
from tests.film_factory import ShotSpec, make_film

pytestmark = pytest.mark.slow

DEADLINE_S = 300.0
LEASE_S = 4
HEADERS = {"Authorization": f"Bearer {TEST_API_KEY}"}
FINISHED = {"done", "failed", "cancelled"}
SHOTS = 24


@dataclass
class Node:
    """One server process: its node id, URL, process and log file."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=HEADERS, timeout=30, **kw)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"node {self.name} exited ({self.proc.returncode}): {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(name: str, tiny: Path, tmp: Path, media: Path, db_url: str, password: str) -> Node:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_")}
    env.update(
        QWEN_SERVER_API_KEYS=TEST_API_KEY,
        QWEN_STORE__URL=db_url,
        QWEN_STORE_PASSWORD=password,
        QWEN_JOBS__DIR=str(tmp / "jobs"),  # the same folder for both: shared storage
        QWEN_JOBS__MEDIA_ROOTS=json.dumps([str(media)]),
        QWEN_JOBS__NODE_ID=name,
        QWEN_JOBS__LEASE_S=str(LEASE_S),
        QWEN_JOBS__BATCH_SIZE="1",  # one shot per batch: a kill or cancel lands mid-job
        QWEN_JOBS__IN_FLIGHT="1",
        QWEN_JOBS__DECODE_WORKERS="2",
    )
    cmd = [sys.executable, "-m", "qwen_server", "--model", str(tiny), "--device", "cpu"]
    cmd += ["--port", str(port), "--max-batch-size", "1"]
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    return Node(name, f"http://127.0.0.1:{port}", proc, log)


def _stop(node: Node) -> None:
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(timeout=30)


def poll(node: Node, path: str, pred: Callable[[dict[str, Any]], bool], what: str) -> Any:
    """GET ``path`` on ``node`` until ``pred(body)``."""
    deadline = time.monotonic() + DEADLINE_S
    last: Any = None
    while time.monotonic() < deadline:
        node.alive()
        try:
            r = node.get(path)
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 200:
            last = r.json()
            if pred(last):
                return last
        time.sleep(0.02)
    pytest.fail(f"timed out waiting on {node.name} for {what}: {last}")


@pytest.fixture
def film(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    looks = [(0.8, "bars"), (0.2, "checker"), (0.6, "circles"), (0.9, "noise")]
    specs = [
        ShotSpec(frames=16, brightness=looks[i % 4][0], pattern=looks[i % 4][1], audio=None)
        for i in range(SHOTS)
    ]
    return make_film(media / "reel.mp4", specs, size=(160, 120)).path


@pytest.fixture
def nodes(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path: Path, film: Path
) -> Iterator[dict[str, Node]]:
    """Two servers, node-a and node-b, on one fresh PostgreSQL database and one jobs folder."""
    postgres = request.getfixturevalue("postgres")
    name = new_database(postgres, "nodes")
    started: dict[str, Node] = {}
    try:
        for node_id in ("node-a", "node-b"):
            started[node_id] = _start(
                node_id,
                tiny_model_dir,
                tmp_path,
                film.parent,
                postgres.url(name),
                postgres.password,
            )
        for node in started.values():
            poll(node, "/jobs", lambda body: True, "the server to answer")
        yield started
    finally:
        for node in started.values():
            _stop(node)
        postgres.drop_database(name)


def _submit(node: Node) -> tuple[str, str]:
    r = httpx.post(
        node.url + "/jobs", json={"path": "reel.mp4", "audio": False}, headers=HEADERS, timeout=60
    )
    assert r.status_code == 202, r.text
    return r.json()["job_id"], r.json()["session_id"]


def _owner_and_other(nodes: dict[str, Node], job_id: str) -> tuple[Node, Node]:
    """Whichever node claimed the job (either may), and the other."""
    status = poll(nodes["node-a"], f"/jobs/{job_id}", lambda s: s["node"] is not None, "a claim")
    owner = nodes[status["node"]]
    other = next(n for n in nodes.values() if n is not owner)
    return owner, other


def _events(node: Node, job_id: str, until: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """SSE messages of the job from ``node`` until one whose status passes ``until``."""
    out: list[dict[str, Any]] = []
    with httpx.stream("GET", node.url + f"/jobs/{job_id}/events", headers=HEADERS, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        message: dict[str, Any] = {}
        for line in r.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                message[key] = json.loads(value) if key == "data" else value
                continue
            out.append(message)
            if message["event"] == "end" or until(message["data"]):
                return out
            message = {}
    return out


def test_a_job_seen_cancelled_and_purged_through_the_node_that_does_not_run_it(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    job_id, session_id = _submit(nodes["node-a"])
    owner, other = _owner_and_other(nodes, job_id)
    # Live progress on the other node: the shared row's counters grow (status, then SSE).
    first = poll(other, f"/jobs/{job_id}", lambda s: s["shots_analysed"] >= 1, "progress")
    assert first["node"] == owner.name and first["state"] in ("decoding", "analysing"), first
    events = _events(other, job_id, lambda s: s["shots_analysed"] > first["shots_analysed"])
    assert events[-1]["event"] == "status", events[-1]
    assert events[-1]["data"]["shots_analysed"] > first["shots_analysed"]
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert {e["data"]["node"] for e in events} == {owner.name}
    # Cancel through the other node: the owner's heartbeat reads the request and stops.
    r = httpx.delete(other.url + f"/jobs/{job_id}", headers=HEADERS, timeout=120)
    assert r.status_code in (200, 202), r.text
    status = poll(other, f"/jobs/{job_id}", lambda s: s["state"] in FINISHED, "the cancel")
    assert status["state"] == "cancelled" and status["cancel_requested"], status
    assert status["node"] == owner.name  # confirmed by the node that ran it
    assert r.status_code == 202 or r.json()["state"] == "cancelled"
    poll(owner, f"/jobs/{job_id}", lambda s: s["state"] == "cancelled", "the owner's status")
    assert f"job {job_id} cancelled" in owner.log.read_text()
    shots = other.get(f"/sessions/{session_id}").json()["shots"]
    stored = [s["shot_id"] for s in shots]
    assert 1 <= len(stored) < SHOTS and stored == list(range(1, len(stored) + 1))
    # The results folder is on the shared jobs.dir: the other node serves it.
    r = other.get(f"/jobs/{job_id}/results", params={"partial": 1})
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert "shots.jsonl" in tar.getnames()
    # A folder this node cannot see (jobs.dir not shared): 409 naming the node that ran it.
    folder = tmp_path / "jobs" / job_id / "results"
    folder.rename(folder.with_name("hidden"))
    r = other.get(f"/jobs/{job_id}/results", params={"partial": 1})
    assert r.status_code == 409 and f"node {owner.name}" in r.json()["detail"], r.text
    folder.with_name("hidden").rename(folder)
    # Purge through the other node: files gone, session and status stay.
    r = httpx.delete(
        other.url + f"/jobs/{job_id}", params={"purge": "true"}, headers=HEADERS, timeout=60
    )
    assert r.status_code == 200 and r.json()["purged_at"], r.text
    assert not (tmp_path / "jobs" / job_id).exists()
    assert owner.get(f"/jobs/{job_id}").json()["purged_at"] == r.json()["purged_at"]
    assert other.get(f"/jobs/{job_id}/results", params={"partial": 1}).status_code == 409
    assert other.get(f"/sessions/{session_id}").json()["shot_count"] == len(stored)
    assert owner.get("/jobs").json()["total"] == other.get("/jobs").json()["total"] == 1


def test_kill_9_of_the_owner_then_the_other_node_completes_the_job_exactly(
    nodes: dict[str, Node], film: Path, tmp_path: Path
) -> None:
    options = JobOptions(audio=False)
    reference = extract(probe(film), tmp_path / "reference", options.extract_options())
    expected = [(r["shot_id"], r["start_time"], r["end_time"]) for r in reference.records]
    assert len(expected) == SHOTS

    job_id, session_id = _submit(nodes["node-b"])
    owner, survivor = _owner_and_other(nodes, job_id)
    before = poll(
        survivor,
        f"/jobs/{job_id}",
        lambda s: s["shots_analysed"] >= 2 or s["state"] in FINISHED,
        "two analysed shots",
    )
    owner.proc.send_signal(signal.SIGKILL)
    owner.proc.wait(timeout=30)
    assert before["state"] in ("decoding", "analysing") and before["shots_analysed"] < SHOTS

    status = poll(
        survivor, f"/jobs/{job_id}", lambda s: s["state"] in FINISHED, "the job to finish"
    )
    assert status["state"] == "done", status
    assert status["node"] == survivor.name  # claimed after the owner's lease ran out
    assert status["shots_found"] == status["shots_analysed"] == SHOTS
    assert f"resuming job {job_id}" in survivor.log.read_text()
    session = survivor.get(f"/sessions/{session_id}").json()
    assert session["shot_count"] == SHOTS
    got = [(s["shot_id"], s["start_time"], s["end_time"]) for s in session["shots"]]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (gid, gs, ge), (_eid, es, ee) in zip(got, expected, strict=True):
        assert gs == pytest.approx(es, abs=1e-6) and ge == pytest.approx(ee, abs=1e-6), gid
    lines = (tmp_path / "jobs" / job_id / "results" / "shots.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["shot_id"] for line in lines) == list(range(1, SHOTS + 1))
