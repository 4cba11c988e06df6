"""Overload drill: 16 clients compete for a queue of 4 shots; nobody starves.

Each client thread sends 20 one-shot requests, one after the other, to a real server on the tiny
model, retrying a 503 after its Retry-After (clamped to 0.5 s so the drill stays short). Before
admission was fair, 11 of 16 clients got none of their 20 requests served while 2 got all 20:
whoever retried at the instant room freed up won. Now a request that finds the queue full waits
in the engine's first-come-first-served line (``server.admission_wait_s``), so service follows
arrival order.

Asserted (no timing thresholds, no tight ratios): every client got all 20 served within a
bounded total, every client had at least one request served before the first client finished
(the no-starvation window), and the Jain index of those window counts is at least 0.8 (round
robin gives 1.0; the retry scramble without the wait line measured 0.65). The figures -
successes per client in that window, their Jain fairness index, first-attempt successes, 503s
and wall time - are printed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from client.api import parse_retry_after
from tests.payloads import image_b64

CLIENTS = 16
REQUESTS = 20
QUEUE_SHOTS = 4
TOTAL_LIMIT_S = 300.0
RETRY_AFTER_CAP_S = 0.5

pytestmark = pytest.mark.slow


@dataclass
class ClientRecord:
    """What one client saw."""

    served_at: list[float] = field(default_factory=list)  # monotonic time of each success
    first_attempt_ok: int = 0
    refusals: int = 0
    unexpected: list[str] = field(default_factory=list)


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one client gets everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 0.0


def _one_shot(client: int, request: int) -> dict:
    shot_id = client * 1000 + request
    return {
        "shots": [
            {
                "shot_id": shot_id,
                "images": [image_b64(size=(64, 64), noise_seed=shot_id)],
                "start_time": float(request),
                "end_time": float(request) + 1.0,
            }
        ]
    }


def _run_client(
    index: int, url: str, key: str, deadline: float, start: threading.Barrier, out: ClientRecord
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120.0) as http:
        start.wait(timeout=60)
        for request in range(REQUESTS):
            body = _one_shot(index, request)
            first = True
            while time.monotonic() < deadline:
                try:
                    r = http.post("/analyze_batch", json=body)
                except httpx.TransportError as exc:
                    out.unexpected.append(f"request {request}: {type(exc).__name__}: {exc}")
                    return
                if r.status_code == 200:
                    got = [x["shot_id"] for x in r.json()["results"]]
                    if got != [index * 1000 + request]:
                        out.unexpected.append(f"request {request}: got results for {got}")
                        return
                    out.served_at.append(time.monotonic())
                    out.first_attempt_ok += int(first)
                    break
                if r.status_code != 503:
                    out.unexpected.append(f"request {request}: {r.status_code} {r.text[:200]}")
                    return
                out.refusals += 1
                first = False
                retry_after = parse_retry_after(r.headers.get("Retry-After"))
                if retry_after is None or retry_after < 1:
                    out.unexpected.append(f"request {request}: 503 without a usable Retry-After")
                    return
                time.sleep(min(retry_after, RETRY_AFTER_CAP_S))
            else:
                return  # out of time: the assertions below report it


def test_sixteen_clients_on_a_queue_of_four_all_get_served(server_factory) -> None:
    with server_factory(
        # A request must be able to fit the queue (a configuration that cannot work is refused).
        server={"max_queued_shots": QUEUE_SHOTS, "max_shots_per_request": QUEUE_SHOTS},
        model={"caption_max_chars": 24, "max_pixels": 64 * 64},
    ) as live:
        records = [ClientRecord() for _ in range(CLIENTS)]
        start = threading.Barrier(CLIENTS + 1)
        t0 = time.monotonic()
        deadline = t0 + TOTAL_LIMIT_S
        threads = [
            threading.Thread(
                target=_run_client,
                args=(i, live.url, live.api_key, deadline, start, records[i]),
                name=f"fairness-client-{i}",
                daemon=True,
            )
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        start.wait(timeout=60)
        t0 = time.monotonic()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline + 30 - time.monotonic()))
        wall = time.monotonic() - t0
        stats = live.app.state.engine.stats()

    served = [len(r.served_at) for r in records]
    finished = [r.served_at[-1] for r in records if len(r.served_at) == REQUESTS]
    first_done = min(finished, default=float("inf"))
    in_window = [sum(1 for t in r.served_at if t <= first_done) for r in records]
    first_ok = [r.first_attempt_ok for r in records]
    refusals = [r.refusals for r in records]
    print(
        f"\noverload fairness: {CLIENTS} clients x {REQUESTS} requests, queue {QUEUE_SHOTS} shots,"
        f" wall {wall:.1f} s\n"
        f"  served before the first client finished: min {min(in_window)} max {max(in_window)}"
        f" Jain {jain(in_window):.3f}  {in_window}\n"
        f"  first-attempt successes: min {min(first_ok)} max {max(first_ok)}"
        f" Jain {jain(first_ok):.3f}\n"
        f"  503s per client: min {min(refusals)} max {max(refusals)} total {sum(refusals)}\n"
        f"  engine: {stats}"
    )
    problems = [f"client {i}: {msg}" for i, r in enumerate(records) for msg in r.unexpected]
    assert not problems, problems
    assert not any(t.is_alive() for t in threads), "a client thread is still running"
    assert served == [REQUESTS] * CLIENTS, f"served per client: {served}"
    assert min(in_window) >= 1, f"a client starved while another finished: {in_window}"
    # Loose on purpose: the wait line gives ~1.0 (round robin); without it (admission_wait_s 0,
    # every client retrying after 503s) this drill measured 0.65 with clients at 1 of 20.
    assert jain(in_window) >= 0.8, f"served before the first client finished: {in_window}"
