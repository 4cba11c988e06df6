"""Seeded random garbage at every body-taking route: never a 500, the server keeps serving."""

from __future__ import annotations

import copy
import json
import random

import httpx

from tests.conftest import LiveServer
from tests.payloads import image_b64, shot

GARBAGE = [
    None,
    True,
    -1,
    0,
    1.5,
    2**64,
    -(2**63),
    "",
    "x" * 3000,
    "\u0000\ud7ff\uffff",
    [],
    {},
    [None],
    {"a": 1},
    "NaN",
    1e308,
    -1e-308,
    "data:image/png;base64,",
    "////",
    [1.0] * 13,
]


def _mutate(value, rng: random.Random, depth: int = 0):
    """Replace, drop or add something somewhere inside ``value``."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.2:
            value.pop(key)
        elif roll < 0.3:
            value[rng.choice(["extra", "shot_id", "images", "stream", "history"])] = rng.choice(
                GARBAGE
            )
        elif roll < 0.6:
            value[key] = rng.choice(GARBAGE)
        else:
            value[key] = _mutate(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and depth < 6:
        i = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.2:
            value.pop(i)
        elif roll < 0.3:
            value.append(copy.deepcopy(value[i]))
        elif roll < 0.6:
            value[i] = rng.choice(GARBAGE)
        else:
            value[i] = _mutate(value[i], rng, depth + 1)
        return value
    return rng.choice(GARBAGE)


def test_random_mutations_never_cause_500(server: LiveServer) -> None:
    rng = random.Random(1234)
    jpeg = image_b64(size=(56, 56))
    base_shot = shot(1, n_frames=2)
    base_shot["images"] = [jpeg, jpeg]
    bodies = {
        "/analyze_batch": {"session_id": "fuzz", "title": "t", "shots": [base_shot, shot(2, 1)]},
        "/analyze": base_shot,
        "/chat": {"session_id": "fuzz", "question": "what?", "history": [], "stream": False},
    }
    statuses: dict[int, int] = {}
    with server.client() as c:
        for i in range(100):
            route = rng.choice(sorted(bodies))
            body = _mutate(copy.deepcopy(bodies[route]), rng)
            text = json.dumps(body, allow_nan=True)
            if rng.random() < 0.1:  # now and then, break the JSON itself
                cut = rng.randrange(max(1, len(text)))
                text = text[:cut]
            r = c.post(route, content=text, headers={"Content-Type": "application/json"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500 or r.status_code in (502, 503, 504), (i, route, r.text[:300])
            assert "Traceback" not in r.text
        for path in (
            "/sessions/fuzz",
            "/sessions?limit=abc",
            "/sessions?offset=-1",
            "/sessions/%2e%2e",
            "/sessions/" + "a" * 500,
        ):
            r = c.get(path)
            assert r.status_code < 500, (path, r.text[:300])
    assert httpx.get(server.url + "/health").status_code == 200
    assert statuses.get(422, 0) > 20  # the fuzz really hit the validators
