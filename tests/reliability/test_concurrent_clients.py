"""Concurrency drill: 8 clients x 50 batches at once, no lost, duplicated or mixed results.

Every client posts 50 two-shot batches under its own session id, all clients at the same time,
to one real server on the tiny model. Results are matched to their shots two ways:

* the measured signals of each result equal those computed here from that shot's own frames
  (each shot's frames are distinct seeded noise), which catches results swapped after decoding;
* the prompt length the model saw (``generation.prompt_tokens``) identifies which (client, shot
  position) a result came from, because each of those 16 has its own frame width and so its own
  number of visual tokens, which catches model outputs handed to the wrong caller.

Then each stored session must hold exactly its client's 100 shots, equal to what was answered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from qwen_server.analysis.images import decode_image
from qwen_server.analysis.signals import measure
from tests.payloads import image_b64

CLIENTS = 8
BATCHES = 50
SHOTS_PER_BATCH = 2
MAX_PIXELS = 4_000_000  # server.max_image_pixels in config.yaml

pytestmark = pytest.mark.slow


def _size(client: int, position: int) -> tuple[int, int]:
    """A frame width of its own per (client, position): 28 px more width, 2 more visual tokens."""
    return (56 + 28 * (SHOTS_PER_BATCH * client + position), 56)


def _shot(client: int, batch: int, position: int) -> dict:
    shot_id = client * 10_000 + batch * SHOTS_PER_BATCH + position
    return {
        "shot_id": shot_id,
        "images": [image_b64(size=_size(client, position), noise_seed=shot_id)],
        "start_time": float(batch * SHOTS_PER_BATCH + position),
        "end_time": float(batch * SHOTS_PER_BATCH + position) + 1.0,
    }


def _expected_measured(shot: dict, keep_pixels: int) -> dict:
    frames = [
        decode_image(data, max_pixels=MAX_PIXELS, keep_pixels=keep_pixels, where="expected")
        for data in shot["images"]
    ]
    return measure(frames).model_dump()


@dataclass
class ClientRun:
    """What one client sent and got back."""

    sent: list[list[dict]] = field(default_factory=list)
    answers: list[list[dict]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _run_client(index: int, url: str, key: str, start: threading.Barrier, out: ClientRun) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300.0) as http:
        start.wait(timeout=60)
        for batch in range(BATCHES):
            shots = [_shot(index, batch, p) for p in range(SHOTS_PER_BATCH)]
            body = {"session_id": f"drill-client-{index}", "shots": shots}
            try:
                r = http.post("/analyze_batch", json=body)
            except httpx.TransportError as exc:
                out.errors.append(f"batch {batch}: {type(exc).__name__}: {exc}")
                return
            if r.status_code != 200:
                out.errors.append(f"batch {batch}: {r.status_code} {r.text[:200]}")
                return
            out.sent.append(shots)
            out.answers.append(r.json()["results"])


def test_eight_clients_fifty_batches_no_lost_duplicated_or_mixed_results(server_factory) -> None:
    keep_pixels = 64 * 64
    with server_factory(model={"caption_max_chars": 24, "max_pixels": 512 * 56}) as live:
        keep_pixels = live.app.state.settings.model.max_pixels
        runs = [ClientRun() for _ in range(CLIENTS)]
        start = threading.Barrier(CLIENTS + 1)
        threads = [
            threading.Thread(
                target=_run_client,
                args=(i, live.url, live.api_key, start, runs[i]),
                name=f"drill-client-{i}",
                daemon=True,
            )
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        start.wait(timeout=60)
        t0 = time.monotonic()
        for thread in threads:
            thread.join(timeout=600)
        wall = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads), "a client did not finish in 10 minutes"
        errors = [f"client {i}: {e}" for i, run in enumerate(runs) for e in run.errors]
        assert not errors, errors
        with live.client() as http:
            stored = {
                i: http.get(f"/sessions/drill-client-{i}").raise_for_status().json()
                for i in range(CLIENTS)
            }
        stats = live.app.state.engine.stats()

    tokens_of: dict[tuple[int, int], set[int]] = {}
    batch_sizes: list[int] = []
    for index, run in enumerate(runs):
        assert len(run.answers) == BATCHES
        for shots, answer in zip(run.sent, run.answers, strict=True):
            assert [r["shot_id"] for r in answer] == [s["shot_id"] for s in shots]
            for position, (shot, result) in enumerate(zip(shots, answer, strict=True)):
                assert result["measured"] == _expected_measured(shot, keep_pixels), shot["shot_id"]
                assert result["start_time"] == shot["start_time"]
                tokens_of.setdefault((index, position), set()).add(
                    result["generation"]["prompt_tokens"]
                )
                batch_sizes.append(result["generation"]["batch_size"])
    # One prompt length per (client, position), and all 16 different: nothing crossed callers.
    assert all(len(v) == 1 for v in tokens_of.values()), tokens_of
    lengths = [next(iter(v)) for v in tokens_of.values()]
    assert len(set(lengths)) == CLIENTS * SHOTS_PER_BATCH, tokens_of

    for index, run in enumerate(runs):
        session = stored[index]
        answered = {r["shot_id"]: r for answer in run.answers for r in answer}
        ids = [s["shot_id"] for s in session["shots"]]
        assert len(ids) == len(set(ids)) == BATCHES * SHOTS_PER_BATCH == session["shot_count"]
        assert set(ids) == set(answered)
        for shot in session["shots"]:
            mine = answered[shot["shot_id"]]
            for key in ("caption", "attributes", "measured", "generation", "start_time"):
                assert shot[key] == mine[key], (index, shot["shot_id"], key)

    shots_total = CLIENTS * BATCHES * SHOTS_PER_BATCH
    print(
        f"\nconcurrency drill: {CLIENTS} clients x {BATCHES} batches x {SHOTS_PER_BATCH} shots"
        f" = {shots_total} shots in {wall:.1f} s ({shots_total / wall:.1f} shots/s);"
        f" model batch size mean {sum(batch_sizes) / len(batch_sizes):.2f}"
        f" max {max(batch_sizes)}; engine: {stats}"
    )
