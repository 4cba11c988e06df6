#!/usr/bin/env python
"""Ray Serve vs the plain single-box server, side by side in one run, same model, same requests.

Three set-ups, each measured the same way over HTTP on loopback:

* **plain**: ``qwen-server`` in a subprocess (uvicorn, the local engine) - the single box;
* **ray x1**: ``qwen_server.ray_serve`` on a local Ray cluster, one engine replica, through
  Serve's HTTP proxy (proxy -> ingress replica -> engine replica);
* **ray x2**: the same application redeployed with two engine replicas.

Figures: **latency** (``--latency-requests`` sequential one-shot requests after a warm-up:
median and p90 ms) and
**throughput** (``--clients`` concurrent clients sending ``--requests`` requests of
``--shots-per-request`` shots: shots/s over the wall time).

The proxy's added latency is not ray x1's latency minus plain's: that difference is mostly
generate time, which varies with the load on the machine. Each response says how long its route
took (``elapsed_ms``) and its shot's stages (decode, queue, preprocess, generate); what is left,
``serving overhead = client wall time - (decode + queue + preprocess + generate)``, is the HTTP
path (plain: uvicorn; ray: proxy -> ingress -> handle -> engine replica and back). The added
latency is ray x1's median overhead minus plain's.

Threads: every set-up runs its engine with ``--threads`` generate and preparation threads
(model.generate_threads, server.prepare_workers, server.prepare_torch_threads), so a replica
of ray x2 and the plain server do the same work per shot.

Model: the tiny random-weight checkpoint of ``make_tiny_model.py`` (built in a temp dir) unless
``--model DIR``. On a machine with fewer cores than replicas x threads, two CPU replicas share
the same cores: read ray x2 against the core count, not as a GPU figure.

Example::

    python scripts/bench_ray.py --out /tmp/bench_ray.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

API_KEY = "bench-ray-key"  # a throw-away key for the loopback servers of this run
_STAGES = ("decode_ms", "queue_ms", "preprocess_ms", "generate_ms")  # a result's timings_ms


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _frame(seed: int) -> str:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (168, 224, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def _body(request: int, shots: int, frames: int) -> dict[str, Any]:
    return {
        "shots": [
            {"shot_id": k, "images": [_frame(request * 1000 + k * 10 + f) for f in range(frames)]}
            for k in range(shots)
        ]
    }


def _wait_health(url: str, replicas: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + "/health", timeout=5)
            if r.status_code == 200 and r.json()["replicas"] >= replicas:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready with {replicas} replica(s)")


def measure(url: str, args: argparse.Namespace, *, latency: bool) -> dict[str, Any]:
    """Latency of sequential one-shot requests (when ``latency``) and concurrent throughput."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        overheads: list[float] = []

        def post(body: dict[str, Any]) -> float:
            t0 = time.perf_counter()
            r = client.post("/analyze_batch", json=body)
            r.raise_for_status()
            wall = time.perf_counter() - t0
            if len(body["shots"]) == 1:
                stages = r.json()["results"][0]["timings_ms"]
                inside = sum(stages.get(k) or 0.0 for k in _STAGES)
                overheads.append(wall * 1000 - inside)
            return wall

        one = _body(0, 1, args.frames)
        for _ in range(3):  # warm-up: first batches, connections, routing tables
            post(one)
        if latency:
            overheads.clear()
            ms = sorted(post(one) * 1000 for _ in range(args.latency_requests))
            out["latency_median_ms"] = round(statistics.median(ms), 1)
            out["latency_p90_ms"] = round(ms[int(0.9 * (len(ms) - 1))], 1)
            out["overhead_median_ms"] = round(statistics.median(overheads), 1)
        bodies = [_body(i, args.shots_per_request, args.frames) for i in range(args.requests)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(post, bodies))
        wall = time.perf_counter() - t0
        out["throughput_shots_per_s"] = round(args.requests * args.shots_per_request / wall, 2)
        out["throughput_wall_s"] = round(wall, 2)
    return out


def bench_plain(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    """The single-box server as an operator starts it: ``python -m qwen_server``."""
    port = _free_port()
    threads = str(args.threads)
    env = dict(os.environ, QWEN_SERVER_API_KEYS=API_KEY, QWEN_STORE__PATH=str(work / "plain.db"))
    env.update(QWEN_MODEL__GENERATE_THREADS=threads, QWEN_SERVER__PREPARE_WORKERS=threads)
    env.update(QWEN_SERVER__PREPARE_TORCH_THREADS=threads)
    cmd = [sys.executable, "-m", "qwen_server", "--config", str(REPO_ROOT / "config.yaml")]
    cmd += ["--model", str(model_dir), "--device", "cpu", "--port", str(port)]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url, 1)
        return measure(url, args, latency=True)
    finally:
        proc.terminate()
        proc.wait(60)


def bench_ray(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    """The Serve application with one engine replica, then redeployed with two."""
    from qwen_server.config import load_settings
    from qwen_server.ray_serve.cluster import connect, deploy, undeploy

    def settings(replicas: int) -> Any:
        return load_settings(
            REPO_ROOT / "config.yaml",
            server={
                "port": port,
                "log_level": "warning",
                "prepare_workers": args.threads,
                "prepare_torch_threads": args.threads,
            },
            model={"path": str(model_dir), "device": "cpu", "generate_threads": args.threads},
            store={"path": str(work / "ray.db")},
            ray={
                "app_name": "bench",
                "num_cpus": os.cpu_count() or 2,
                "cpus_per_replica": 0.5,
                "min_replicas": replicas,
                "max_replicas": replicas,
                "object_store_mb": 256,
            },
            server_api_keys=API_KEY,
        )

    port = _free_port()
    one = settings(1)
    connect(one)
    out: dict[str, Any] = {}
    try:
        url = deploy(one)
        _wait_health(url, 1)
        out["ray_x1"] = measure(url, args, latency=True)
        deploy(settings(2))  # an update of the same application: a second replica starts
        _wait_health(url, 2)
        out["ray_x2"] = measure(url, args, latency=False)
    finally:
        undeploy(one)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, help="checkpoint directory (default: the tiny one)")
    p.add_argument("--frames", type=int, default=2, help="frames per shot (224x168 JPEG)")
    p.add_argument("--latency-requests", type=int, default=20)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--shots-per-request", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="generate/preparation threads")
    p.add_argument("--out", type=Path, help="write the figures as JSON here too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            model_dir = work / "tiny"
            script = REPO_ROOT / "scripts" / "make_tiny_model.py"
            subprocess.run([sys.executable, str(script), "--out", str(model_dir)], check=True)
        result: dict[str, Any] = {"cores": os.cpu_count(), "model": model_dir.name}
        result["load_before"] = round(os.getloadavg()[0], 2)
        result["plain"] = bench_plain(args, model_dir, work)
        result.update(bench_ray(args, model_dir, work))
        result["load_after"] = round(os.getloadavg()[0], 2)
    plain, x1 = result["plain"], result["ray_x1"]
    result["proxy_added_latency_ms"] = round(
        x1["overhead_median_ms"] - plain["overhead_median_ms"], 1
    )
    print(
        f"\n{result['cores']} cores (load {result['load_before']} -> {result['load_after']}), "
        f"model {result['model']}, {args.frames} frames/shot, {args.threads} thread(s)"
    )
    print(f"{'':8} {'latency median':>15} {'p90':>10} {'overhead':>10} {'shots/s':>8}")
    for name in ("plain", "ray_x1", "ray_x2"):
        row = result[name]
        cells = [row.get(k, "-") for k in ("latency_median_ms", "latency_p90_ms")]
        cells.append(row.get("overhead_median_ms", "-"))
        print(
            f"{name:8} {cells[0]!s:>12} ms {cells[1]!s:>7} ms {cells[2]!s:>7} ms "
            f"{row['throughput_shots_per_s']:>8}"
        )
    print(
        "proxy added latency (median overhead, ray x1 - plain):",
        result["proxy_added_latency_ms"],
        "ms",
    )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
