"""The server on Ray Serve, for real on one machine: a local Ray cluster on loopback (CPU only,
no dashboard, a small object store), two engine replicas of the tiny checkpoint, requests
through Serve's HTTP proxy.

Every shot of every request has its own flat grey level, so its measured luminance says which
shot its result came from: results mixed between requests or reordered would not match.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, TEST_API_KEY, test_settings
from tests.film_factory import ShotSpec, make_film
from tests.payloads import image_b64

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
serve = pytest.importorskip("ray.serve")

from qwen_server.ray_serve.cluster import connect, deploy, undeploy  # noqa: E402
from qwen_server.ray_serve.ingress import REPLICA_HEADER, RETRIES_HEADER  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

APP = "qwen-test"
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_processes(session: str) -> list[str]:
    """Processes (raylet, GCS, workers) whose command line names this Ray session."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if session in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:120]}")
    return found


def _ray_settings(model_dir: Path, folder: Path, port: int, replicas: int) -> Any:
    return test_settings(
        model_dir,
        folder,
        server={"port": port, "prepare_workers": 1, "prepare_torch_threads": 1},
        model={"generate_threads": 1},
        ray={
            "app_name": APP,
            "num_cpus": 2,
            "cpus_per_replica": 0.5,
            "min_replicas": replicas,
            "max_replicas": replicas,
            "object_store_mb": 128,
            "include_dashboard": False,
            "graceful_shutdown_timeout_s": 30,
            "health_check_period_s": 2,
        },
    )


@pytest.fixture(scope="module")
def ray_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def ray_app(tiny_model_dir: Path, ray_folder: Path) -> Iterator[str]:
    """The Serve application on a local 2-CPU cluster; after it, no process of it is left."""
    settings = _ray_settings(tiny_model_dir, ray_folder, _free_port(), replicas=2)
    connect(settings)
    session = Path(ray._private.worker._global_node.get_session_dir_path()).name
    try:
        url = deploy(settings)
        _wait_ready(url)
        yield url
    finally:
        undeploy(settings)
        deadline = time.monotonic() + 60
        while _session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.2)  # raylet and workers exit after the driver disconnects
        left = _session_processes(session)
        assert not left, f"Ray processes left after shutdown: {left}"


def _wait_ready(url: str) -> None:
    """Until /health says both engine replicas serve (bounded)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = httpx.get(url + "/health", timeout=5)
        if r.status_code == 200 and r.json()["replicas"] == 2:
            return
        time.sleep(0.2)
    raise AssertionError(f"the Serve app did not report 2 ready replicas: {r.text}")


def _grey(request: int, shot: int) -> int:
    """The grey level of one shot of one request: 75 distinct levels 3 apart (more than the
    shots in flight at once in any test here), so no two concurrent shots look alike."""
    return 16 + ((request * 3 + shot) % 75) * 3


def _body(request: int, shots: int = 3) -> dict[str, Any]:
    return {
        "shots": [
            {
                "shot_id": 1000 * request + k,
                "images": [image_b64(color=(_grey(request, k),) * 3)] * 2,
                "start_time": float(k),
                "end_time": float(k) + 1.0,
            }
            for k in range(shots)
        ]
    }


def _check(request: int, response: httpx.Response, shots: int = 3) -> None:
    """Results in request order, each one the analysis of its own shot."""
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["shot_id"] for r in results] == [1000 * request + k for k in range(shots)]
    for k, result in enumerate(results):
        assert result["measured"]["luminance"] == pytest.approx(_grey(request, k) / 255, abs=0.01)
        assert result["caption"] and set(result["attributes"])


def _post_until_done(client: httpx.Client, request: int) -> tuple[httpx.Response, int]:
    """POST one batch, retrying a 503 after its Retry-After as the client does (bounded)."""
    for refused in range(20):
        r = client.post("/analyze_batch", json=_body(request))
        if r.status_code != 503:
            return r, refused
        assert r.headers.get("Retry-After"), r.text
        time.sleep(float(r.headers["Retry-After"]))
    raise AssertionError(f"request {request}: 503 twenty times: {r.text}")


def test_concurrent_batches_spread_over_both_replicas(ray_app: str) -> None:
    seen: set[str] = set()
    with httpx.Client(base_url=ray_app, headers=AUTH, timeout=120) as client:
        r = client.post("/analyze_batch", json=_body(0), headers={"Authorization": "Bearer no"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert client.post("/analyze_batch", json={"shots": [{"shot_id": 1}]}).status_code == 422
        for round_ in range(5):  # until both replicas served (one round almost always does)
            first = round_ * 8
            with ThreadPoolExecutor(8) as pool:
                responses = list(
                    pool.map(
                        lambda i: client.post("/analyze_batch", json=_body(i)),
                        range(first, first + 8),
                    )
                )
            for i, response in zip(range(first, first + 8), responses, strict=True):
                _check(i, response)
                seen.update(response.headers[REPLICA_HEADER].split(","))
            if len(seen) == 2:
                break
    assert len(seen) == 2, f"only {seen} served"
    stats = serve.get_deployment_handle("Ingress", app_name=APP).engine_stats.remote().result()
    assert set(stats["served_by"]) == seen and sum(stats["served_by"].values()) >= 24


def test_qwen_client_analyze_through_the_proxy(ray_app: str, tmp_path: Path) -> None:
    film = make_film(
        tmp_path / "ray film.mp4",
        [
            ShotSpec(frames=30, brightness=0.85, pattern="bars", audio="tone"),
            ShotSpec(frames=25, brightness=0.08, pattern="checker", audio="silence"),
            ShotSpec(frames=30, brightness=0.5, pattern="circles", audio="noise"),
        ],
        size=(224, 168),
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "client.cli", "analyze", str(film.path), "--server", ray_app]
        + ["--out", str(out), "--batch-size", "2", "-q", "--no-exports"],
        cwd=REPO_ROOT,
        env=dict(os.environ, QWEN_SERVER_TOKEN=TEST_API_KEY),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [r["start_frame"] for r in records] == [0, 30, 55]
    assert records[1]["attributes"]["darkness"] > records[0]["attributes"]["darkness"]
    # Stored by the ingress under the film's session, read back through the proxy.
    r = httpx.get(f"{ray_app}/sessions/ray_film.mp4", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["shot_count"] == 3, r.text


def test_killing_a_replica_mid_load_loses_no_request(ray_app: str) -> None:
    """Five clients keep sending; one engine replica's actor is killed while they do. Every
    request ends answered 200 with its own results (retried by the ingress on the other
    replica, or 503 + Retry-After that the client retries)."""
    ingress = serve.get_deployment_handle("Ingress", app_name=APP)
    lost_before = ingress.engine_stats.remote().result()["replicas_lost"]
    clients = 5
    done: list[int] = []
    served: list[str] = []
    refused: list[int] = []
    resent: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    started = threading.Event()
    stop = threading.Event()

    def client_loop(c: int) -> None:
        # Each client sends until told to stop, so calls are in flight whenever the kill
        # lands, however long the machine takes (a fixed number of calls could all be over).
        try:
            with httpx.Client(base_url=ray_app, headers=AUTH, timeout=120) as client:
                n = 0
                while not stop.is_set():
                    request = c * 10_000 + n
                    n += 1
                    response, retried = _post_until_done(client, request)
                    _check(request, response)
                    with lock:
                        done.append(request)
                        refused.append(retried)
                        resent.append(int(response.headers.get(RETRIES_HEADER, 0)))
                        served.append(response.headers[REPLICA_HEADER].split(",")[-1])
                        if len(done) >= clients:
                            started.set()
        except BaseException as exc:
            errors.append(exc)

    def lost() -> int:
        return int(ingress.engine_stats.remote().result()["replicas_lost"]) - lost_before

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    try:
        assert started.wait(120), f"no request finished: {errors}"
        # Whether a kill lands while the victim holds a call is timing (on a loaded machine
        # the victim's calls can all have ended by then): kill, wait for the ingress to report
        # a replica lost under a call, and if it reports none, wait for Serve's replacement
        # replica and kill again (at most 4 times).
        for _attempt in range(4):
            # The replicas' actors looked up before the kill, so it follows the choice at once.
            replicas = ingress.engine_stats.remote().result()["engine_replicas"]
            actors = {n: ray.get_actor(r["actor"], namespace="serve") for n, r in replicas.items()}
            # The victim: the replica that answered most of the latest responses, so the one
            # with calls in flight now (each client posts again as soon as it has its answer).
            with lock:
                latest = [name for name in served[-2 * clients :] if name in actors]
            victim = max(set(latest), key=latest.count)
            ray.kill(actors[victim], no_restart=True)
            deadline = time.monotonic() + 60
            while lost() == 0 and time.monotonic() < deadline and not errors:
                time.sleep(0.2)
            if lost() > 0 or errors:
                break
            deadline = time.monotonic() + 180
            while _running_engine_replicas() < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
        # A few more rounds of calls after the loss, then the clients stop.
        with lock:
            after = len(done) + 2 * clients
        deadline = time.monotonic() + 180
        while len(done) < after and time.monotonic() < deadline and not errors:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(300)
    assert not errors, errors
    assert len(done) == len(set(done)) and len(done) >= 3 * clients
    stats = ingress.engine_stats.remote().result()
    print(
        f"requests: {len(done)}, replicas lost under a call: {lost()}, "
        f"retries: {stats['retries']}, client-side 503 retries: {sum(refused)}"
    )
    # The kill hit calls in flight: the ingress saw the replica lost under them, and they were
    # sent again (the responses say so) or refused with 503 + Retry-After and sent again by
    # the client.
    assert lost() > 0
    assert sum(resent) + sum(refused) >= 1


def _running_engine_replicas() -> int:
    status = serve.status().applications[APP].deployments["Engine"]
    return status.replica_states.get("RUNNING", 0)


def test_scaling_down_under_load_drains_without_losing_a_call(
    ray_app: str, tiny_model_dir: Path, ray_folder: Path
) -> None:
    """The application redeployed from 2 engine replicas to 1 while four clients keep sending:
    Serve stops routing to the replicas it removes, they finish their calls and stop their
    engines (graceful_shutdown_timeout_s); no call dies under a replica, every request is 200."""
    deadline = time.monotonic() + 120
    while _running_engine_replicas() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the replica killed by the previous test is being replaced
    assert _running_engine_replicas() == 2
    stop = threading.Event()
    done: list[int] = []
    resent: list[int] = []
    refused: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    first = threading.Event()

    def client_loop(c: int) -> None:
        try:
            with httpx.Client(base_url=ray_app, headers=AUTH, timeout=120) as client:
                n = 0
                while not stop.is_set() or n < 2:
                    request = n * 4 + c  # the four in flight: neighbours, distinct greys
                    response, retried = _post_until_done(client, request)
                    _check(request, response)
                    with lock:
                        done.append(request)
                        refused.append(retried)
                        resent.append(int(response.headers.get(RETRIES_HEADER, 0)))
                    first.set()
                    n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    try:
        assert first.wait(120), f"no request finished: {errors}"
        port = int(ray_app.rsplit(":", 1)[1])
        deploy(_ray_settings(tiny_model_dir, ray_folder, port, replicas=1))
    finally:
        stop.set()
        for t in threads:
            t.join(300)
    assert not errors, errors
    assert _running_engine_replicas() == 1
    # The redeploy replaces the ingress too (new settings), so its counters start again: the
    # responses' own retry counts say whether a call died under a drained replica.
    assert sum(resent) == 0, "a call died under a drained replica and was sent again"
    print(f"{len(done)} requests during the scale-down, all answered; 503s retried: {sum(refused)}")
