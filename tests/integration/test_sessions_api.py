"""``/sessions`` on the real server (uvicorn on loopback, tiny real model), over HTTP.

Every test runs twice: with the default SQLite store and with ``store.url`` pointing at a
database on the real PostgreSQL test server (tests/postgres_server.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_API_KEY, LiveServer, new_database, run_server, test_settings
from tests.payloads import shot
from tests.store_backends import PostgresBackend, SqliteBackend, StoreBackend


def _backend(kind: str, request: pytest.FixtureRequest, folder: Any) -> Iterator[StoreBackend]:
    if kind == "sqlite":
        yield SqliteBackend(folder / "sessions.sqlite3")
        return
    postgres = request.getfixturevalue("postgres")
    name = new_database(postgres, "api")
    try:
        yield PostgresBackend(postgres, postgres.url(name))
    finally:
        postgres.drop_database(name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tiny_model_dir, tmp_path_factory
) -> Iterator[LiveServer]:
    """This module's real server, once per store backend (shadows conftest's shared one)."""
    folder = tmp_path_factory.mktemp(f"sessions-{request.param}")
    for backend in _backend(request.param, request, folder):
        with run_server(test_settings(tiny_model_dir, folder, **backend.settings())) as live:
            kind = live.app.state.store.describe().split()[0]
            assert kind == {"sqlite": "SQLite", "postgres": "PostgreSQL"}[request.param]
            live.backend = backend  # type: ignore[attr-defined]  # for the secrets check
            yield live


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreBackend]:
    """A fresh database of either backend for one test."""
    yield from _backend(request.param, request, tmp_path)


def new_id(prefix: str = "film") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def seed(server: LiveServer, session_id: str, shot_ids: list[int], title: str | None = None):
    """Store results directly through the running app's store (same file the routes read)."""
    results = [
        {
            "shot_id": i,
            "caption": f"caption {i}",
            "attributes": dict.fromkeys(
                ("suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion"),
                0.5,
            ),
            "audio_class": "music",
            "start_time": i * 2.0,
            "end_time": i * 2.0 + 2.0,
        }
        for i in shot_ids
    ]
    server.app.state.store.save_results(session_id, results, title=title, model="seeded")


def test_health_shows_the_store_without_secrets_or_paths(server: LiveServer):
    body = httpx.get(server.url + "/health", timeout=30).text
    assert '"store":"ok"' in body.replace(" ", "")
    backend = server.backend  # type: ignore[attr-defined]
    if isinstance(backend, PostgresBackend):
        assert backend.server.password not in body and "postgresql://" not in body
    else:
        assert str(backend.path) not in body and "sqlite3" not in body


def test_analyze_batch_with_session_id_stores_and_replaces(server: LiveServer):
    sid = new_id()
    with server.client() as c:
        r = c.post(
            "/analyze_batch",
            json={"session_id": sid, "title": "Night Harbour", "shots": [shot(2), shot(0)]},
        )
        assert r.status_code == 200, r.text
        first = {x["shot_id"]: x for x in r.json()["results"]}
        # Re-analysing shot 2 (plus a new shot 5) replaces it rather than adding a row.
        r = c.post("/analyze_batch", json={"session_id": sid, "shots": [shot(5), shot(2)]})
        assert r.status_code == 200, r.text
        second = {x["shot_id"]: x for x in r.json()["results"]}

        d = c.get(f"/sessions/{sid}")
    assert d.status_code == 200, d.text
    body = d.json()
    assert body["session_id"] == sid and body["title"] == "Night Harbour"
    assert body["shot_count"] == 3 and body["model"]
    assert [s["shot_id"] for s in body["shots"]] == [0, 2, 5]  # time order
    assert body["shots"][0] == first[0]  # the whole result, as returned
    assert body["shots"][1] == second[2]


def test_list_pages_with_total(server: LiveServer):
    ids = [new_id("page") for _ in range(3)]
    for sid in ids:
        seed(server, sid, [1, 2], title=f"T {sid}")
    with server.client() as c:
        r = c.get("/sessions", params={"limit": 2})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["limit"] == 2 and page["offset"] == 0 and page["total"] >= 3
        assert [s["session_id"] for s in page["items"]] == ids[::-1][:2]  # newest first
        item = page["items"][0]
        assert set(item) == {
            "session_id",
            "title",
            "model",
            "shot_count",
            "created_at",
            "updated_at",
        }
        assert item["shot_count"] == 2 and item["title"] == f"T {ids[-1]}"
        r = c.get("/sessions", params={"limit": 2, "offset": 2})
        assert r.json()["items"][0]["session_id"] == ids[0]
        default = c.get("/sessions").json()
        assert default["limit"] == 50 and default["total"] == page["total"]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"offset": -1}, {"limit": "x"}, {"offset": 10**12}],
)
def test_bad_paging_is_422(server: LiveServer, params: dict):
    with server.client() as c:
        r = c.get("/sessions", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_delete_is_204_then_404(server: LiveServer):
    sid = new_id()
    seed(server, sid, [1])
    with server.client() as c:
        r = c.delete(f"/sessions/{sid}")
        assert r.status_code == 204 and r.content == b""
        assert c.get(f"/sessions/{sid}").status_code == 404
        r = c.delete(f"/sessions/{sid}")
        assert r.status_code == 404
        assert r.json() == {"detail": f"session not found: {sid}"}


@pytest.mark.parametrize(
    "bad",
    # (an encoded slash is a different path, /sessions/a/b: 404, not a session id)
    ["-dash-first", ".hidden", "semi;colon", "sp%20ace", "x" * 129, "%C3%BCml", "a%00b"],
)
def test_bad_ids_are_422_with_the_rule(server: LiveServer, bad: str):
    with server.client() as c:
        for method in ("GET", "DELETE"):
            r = c.request(method, f"/sessions/{bad}")
            assert r.status_code == 422, (method, bad, r.text)
            assert "letters, digits" in r.json()["detail"]


def test_unknown_id_is_404(server: LiveServer):
    with server.client() as c:
        r = c.get("/sessions/no-such-film")
    assert r.status_code == 404
    assert r.json()["detail"] == "session not found: no-such-film"


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_sessions_need_the_bearer_key(server: LiveServer, key: str | None):
    sid = new_id()
    seed(server, sid, [1])
    with server.client(key) as c:
        for method, path in (
            ("GET", "/sessions"),
            ("GET", f"/sessions/{sid}"),
            ("DELETE", f"/sessions/{sid}"),
        ):
            r = c.request(method, path)
            assert r.status_code == 401, (method, path)
            assert r.headers["www-authenticate"] == "Bearer"
    with server.client() as c:
        assert c.get(f"/sessions/{sid}").status_code == 200  # the DELETE did nothing


def test_concurrent_batches_for_one_session(server: LiveServer):
    sid = new_id()

    def post(k: int) -> int:
        ids = [k * 2, k * 2 + 1]
        with server.client() as c:
            r = c.post(
                "/analyze_batch", json={"session_id": sid, "shots": [shot(i, 1) for i in ids]}
            )
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(post, range(6))) == [200] * 6
    with server.client() as c:
        body = c.get(f"/sessions/{sid}").json()
    assert [s["shot_id"] for s in body["shots"]] == list(range(12))
    assert body["shot_count"] == 12


def test_sessions_survive_a_restart(tiny_model_dir, tmp_path, backend: StoreBackend):
    settings = test_settings(tiny_model_dir, tmp_path, **backend.settings())
    with run_server(settings) as live, live.client() as c:
        r = c.post("/analyze_batch", json={"session_id": "kept", "shots": [shot(1, 1)]})
        assert r.status_code == 200, r.text
        before = c.get("/sessions/kept").json()
    with pytest.raises(httpx.TransportError):
        httpx.get(live.url + "/health", timeout=2)
    with run_server(settings) as again, again.client() as c:
        assert c.get("/sessions/kept").json() == before
        assert TEST_API_KEY not in c.get("/sessions").text
