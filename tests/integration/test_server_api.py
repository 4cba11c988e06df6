"""The real server on loopback (uvicorn + the real engine on the tiny checkpoint), over HTTP."""

from __future__ import annotations

import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_API_KEY, LiveServer, run_server, test_settings
from tests.payloads import audio_features, image_b64, shot

ATTRS = {"suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion"}


def assert_healthy(server: LiveServer) -> None:
    r = httpx.get(server.url + "/health", timeout=10)
    assert r.status_code == 200, r.text


# --- health and docs -------------------------------------------------------------------------


def test_health_is_public_and_reveals_no_secrets_or_paths(server: LiveServer, tiny_model_dir):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["device"] == "cpu" and body["gpu_count"] == 0
    assert body["model"] == tiny_model_dir.name
    assert {"version", "queue_depth", "uptime_s", "shots_served", "replicas"} <= set(body)
    assert TEST_API_KEY not in r.text
    assert str(tiny_model_dir.parent) not in r.text and "/tmp" not in r.text


def test_openapi_describes_every_field(server: LiveServer):
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    schemas = spec["components"]["schemas"]
    for name in (
        "ShotIn",
        "AudioFeatures",
        "AnalyzeBatchRequest",
        "ShotResult",
        "AttributeDefinition",
        "VocabularyEntry",
        "VocabularyResponse",
        "MeasuredSignals",
        "AudioCues",
        "AnalyzeBatchResponse",
        "HealthResponse",
    ):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"


# --- auth ------------------------------------------------------------------------------------


def _registered_routes(routes, prefix: str = ""):
    """Every (path, methods) the app serves, descending into included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included-router wrapper
        if included is not None:
            yield from _registered_routes(included.routes, prefix + route.include_context.prefix)
        elif getattr(route, "methods", None):
            yield prefix + route.path, route.methods


def _route_calls(app) -> list[tuple[str, str]]:
    calls = []
    for path, methods in _registered_routes(app.routes):
        for method in sorted(methods):
            if method in ("HEAD", "OPTIONS"):
                continue
            calls.append((method, re.sub(r"\{[^}]+\}", "some-id", path)))
    return calls


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": TEST_API_KEY},
    ],
    ids=["missing", "wrong", "basic", "empty-bearer", "no-scheme"],
)
def test_every_route_but_health_rejects_bad_keys(server: LiveServer, headers: dict) -> None:
    calls = _route_calls(server.app)
    paths = {p for _, p in calls}
    # The walk must cover the whole contract (and whatever else gets registered later).
    assert {"/analyze", "/analyze_batch", "/openapi.json", "/docs", "/health"} <= paths
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in calls:
            r = c.request(method, path, headers=headers, json={})
            if (method, path) == ("GET", "/health"):
                assert r.status_code == 200
                continue
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            assert TEST_API_KEY not in r.text
        # Unknown paths do not reveal themselves to strangers either.
        assert c.get("/no-such-route", headers=headers).status_code == 401


def test_non_ascii_key_is_401_not_500(server: LiveServer) -> None:
    raw = (
        b"POST /analyze HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xe9\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 401")


def test_rotated_keys_all_work(tiny_model_dir, tmp_path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("old-key\nnew-key\n")
    settings = test_settings(tiny_model_dir, tmp_path, server={"api_key_file": str(keyfile)})
    with run_server(settings) as live:
        for key in ("old-key", "new-key", TEST_API_KEY):
            with live.client(key) as c:
                assert c.post("/analyze", json=shot(1)).status_code == 200
        with live.client("older-key") as c:
            assert c.post("/analyze", json=shot(1)).status_code == 401


def test_refuses_to_start_without_keys_unless_insecure(tiny_model_dir, tmp_path, caplog):
    from qwen_server.errors import ConfigError
    from qwen_server.http.app import create_app

    settings = test_settings(tiny_model_dir, tmp_path, server_api_keys=None)
    with pytest.raises(ConfigError, match="QWEN_SERVER_API_KEYS"):
        create_app(settings)
    insecure = test_settings(
        tiny_model_dir, tmp_path, server_api_keys=None, server={"insecure_no_auth": True}
    )
    create_app(insecure)
    assert "INSECURE" in caplog.text


# --- analysis --------------------------------------------------------------------------------


def test_analyze_batch_returns_results_in_request_order(server: LiveServer) -> None:
    ids = [7, 2, 11, 0]
    shots = [shot(i, n_frames=1 + i % 4) for i in ids]
    shots[1].pop("audio_features")  # a shot without audio is analysed from images
    with server.client() as c:
        r = c.post("/analyze_batch", json={"shots": shots})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["shot_id"] for x in body["results"]] == ids
    assert body["count"] == 4 and body["model"]
    for res in body["results"]:
        assert isinstance(res["caption"], str)
        for key in ("attributes", "model_attributes"):
            assert set(res[key]) == ATTRS
            assert all(0.0 <= v <= 1.0 for v in res[key].values())
        assert set(res["measured"]) >= {"luminance", "darkness", "motion", "contrast", "saturation"}
    assert body["results"][1]["audio_class"] == "unknown"
    assert body["results"][1]["audio"] is None
    assert body["results"][0]["audio_class"] in {"speech", "music", "ambience", "loud_action"}
    assert body["results"][0]["duration"] == pytest.approx(1.5)


def test_analyze_single_shot(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/analyze", json=shot(3, n_frames=5))
    assert r.status_code == 200, r.text
    assert r.json()["shot_id"] == 3


def test_black_shot_is_dark_and_still(server: LiveServer) -> None:
    black = {"shot_id": 1, "images": [image_b64((0, 0, 0))] * 5}
    with server.client() as c:
        res = c.post("/analyze", json=black).json()
    assert res["measured"]["darkness"] == pytest.approx(1.0, abs=1e-3)
    assert res["measured"]["motion"] == pytest.approx(0.0, abs=1e-3)
    assert res["attributes"]["darkness"] >= 0.7
    assert res["attributes"]["motion"] <= 0.3


def test_concurrent_requests_each_get_their_own_results(server: LiveServer) -> None:
    def post(k: int) -> list[int]:
        ids = [k * 10 + j for j in range(3)]
        with server.client() as c:
            r = c.post("/analyze_batch", json={"shots": [shot(i, n_frames=2) for i in ids]})
        assert r.status_code == 200, r.text
        got = [x["shot_id"] for x in r.json()["results"]]
        assert got == ids
        return got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(8)))
    assert len(results) == 8
    assert_healthy(server)


# --- bad input: clear 4xx, server keeps serving ----------------------------------------------

_JPEG = image_b64()
BAD_BODIES = {
    "bad-base64": ({"shots": [shot(1, images=["@@not base64@@"])]}, 422, "shot 1 image 0"),
    "not-an-image": (
        {"shots": [shot(1, images=["aGVsbG8gd29ybGQ="])]},
        422,
        "not a JPEG or PNG",
    ),
    "truncated-jpeg": (
        {"shots": [shot(4, images=[_JPEG, _JPEG[: len(_JPEG) // 2 // 4 * 4]])]},
        422,
        "shot 4 image 1: truncated",
    ),
    "zero-frames": ({"shots": [shot(1, images=[])]}, 422, "images"),
    "too-many-frames": ({"shots": [shot(1, n_frames=9)]}, 422, "max_images_per_shot"),
    "too-many-shots": (
        {"shots": [{"shot_id": i, "images": [_JPEG]} for i in range(65)]},
        422,
        "max_shots_per_request",
    ),
    "empty-batch": ({"shots": []}, 422, "shots"),
    "no-shots-key": ({"session_id": "x"}, 422, "shots"),
    "duplicate-ids": ({"shots": [shot(1), shot(1)]}, 422, "duplicate shot_id"),
    "wrong-length-mfcc": (
        {"shots": [shot(1, audio_features={**audio_features(), "mfcc_mean": [0.0] * 12})]},
        422,
        "mfcc_mean",
    ),
    "negative-rms": (
        {"shots": [shot(1, audio_features={**audio_features(), "rms_energy_mean": -1})]},
        422,
        "rms_energy_mean",
    ),
    "end-before-start": (
        {"shots": [shot(1, start_time=5.0, end_time=4.0)]},
        422,
        "before start_time",
    ),
    "bad-session-id": ({"session_id": "../etc/passwd", "shots": [shot(1)]}, 422, "session_id"),
    "shot-id-string": ({"shots": [{**shot(1), "shot_id": "abc"}]}, 422, "shot_id"),
    "not-a-list": ({"shots": "lots"}, 422, "shots"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_input_gets_clear_4xx_and_server_keeps_serving(server: LiveServer, case: str):
    body, status, needle = BAD_BODIES[case]
    with server.client() as c:
        r = c.post("/analyze_batch", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text, r.text
    assert len(r.content) < 20_000  # never echoes megabytes of base64 back
    assert_healthy(server)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_features_are_refused(server: LiveServer, token: str) -> None:
    body = json.dumps({"shots": [shot(1)]}).replace('"tempo": 0.0', f'"tempo": {token}')
    assert token in body
    with server.client() as c:
        r = c.post("/analyze_batch", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "tempo" in r.text
    assert_healthy(server)


def test_malformed_json_is_422(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/analyze", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert_healthy(server)


def test_oversized_image_is_refused(server: LiveServer) -> None:
    big = image_b64(size=(2100, 2000))  # 4.2 MP > the 4 MP default
    with server.client() as c:
        r = c.post("/analyze", json={"shot_id": 1, "images": [big]})
    assert r.status_code == 422 and "max_image_pixels" in r.text
    assert_healthy(server)


def test_body_limit_declared_chunked_and_lying(server_factory) -> None:
    with server_factory(server={"max_body_mb": 0.05}) as live:  # 52 KB
        big = {"shots": [shot(1, images=[image_b64(size=(400, 300), noise_seed=1)] * 2)]}
        payload = json.dumps(big).encode()
        assert len(payload) > 60_000
        with live.client() as c:
            r = c.post(
                "/analyze_batch", content=payload, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 413 and "max_body_mb" in r.text

            def chunks():
                for i in range(0, len(payload), 8192):
                    yield payload[i : i + 8192]

            r = c.post(
                "/analyze_batch", content=chunks(), headers={"Content-Type": "application/json"}
            )
            assert "content-length" not in {k.lower() for k in r.request.headers}
            assert r.status_code == 413 and "max_body_mb" in r.text
        # Content-Length claims a small body while far more is sent: only the claimed bytes are
        # read (the rest is never buffered) and the request fails as malformed JSON.
        port = int(live.url.rsplit(":", 1)[1])
        head = (
            f"POST /analyze_batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head + payload[:20_000])
            reply = s.recv(4096)
        assert reply.split(b"\r\n", 1)[0] in (
            b"HTTP/1.1 422 Unprocessable Entity",
            b"HTTP/1.1 413 Request Entity Too Large",
        )
        assert httpx.get(live.url + "/health").status_code == 200


def test_a_queue_smaller_than_one_request_is_refused_at_start_up(tiny_model_dir, tmp_path) -> None:
    """A queue of 2 shots with requests of up to 64 would answer every full request 503
    "retry shortly" forever: refused before serving, naming both keys and their variables.
    (503 + Retry-After under real overload is drilled in tests/reliability and the engine.)"""
    from qwen_server.errors import ConfigError

    with pytest.raises(ConfigError) as excinfo:
        test_settings(tiny_model_dir, tmp_path, server={"max_queued_shots": 2})
    message = str(excinfo.value)
    for name in (
        "server.max_queued_shots",
        "QWEN_SERVER__MAX_QUEUED_SHOTS",
        "server.max_shots_per_request",
        "QWEN_SERVER__MAX_SHOTS_PER_REQUEST",
    ):
        assert name in message
    # Equal bounds work: a full request fits the queue exactly.
    settings = test_settings(
        tiny_model_dir, tmp_path, server={"max_queued_shots": 2, "max_shots_per_request": 2}
    )
    with run_server(settings) as live, live.client() as c:
        assert c.post("/analyze_batch", json={"shots": [shot(1), shot(2)]}).status_code == 200
        r = c.post("/analyze_batch", json={"shots": [shot(i) for i in range(3)]})
        assert r.status_code == 422 and "max_shots_per_request" in r.text


def test_health_reports_the_store(server: LiveServer) -> None:
    body = httpx.get(server.url + "/health").json()
    assert body["store"] == "ok"


# --- readiness -------------------------------------------------------------------------------


def test_health_is_503_while_loading_then_200(tiny_model_dir, tmp_path) -> None:
    from qwen_server.engine.lifecycle import Engine

    release = threading.Event()

    class SlowLoadingEngine(Engine):
        def load(self) -> None:  # the real load, held back until the test says so
            release.wait(60)
            super().load()

    settings = test_settings(tiny_model_dir, tmp_path)
    with run_server(settings, wait_ready=False, engine=SlowLoadingEngine(settings)) as live:
        r = httpx.get(live.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        with live.client() as c:
            r = c.post("/analyze", json=shot(1))
            assert r.status_code == 503 and "loading" in r.text
        release.set()
        for _ in range(600):
            if httpx.get(live.url + "/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.get(live.url + "/health").json()["status"] == "ok"


@pytest.mark.allow_error_logs
def test_health_is_503_when_the_model_cannot_load(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    settings = test_settings(empty, tmp_path)
    with run_server(settings, wait_ready=False) as live:
        for _ in range(600):
            body = httpx.get(live.url + "/health").json()
            if body["status"] == "error":
                break
            threading.Event().wait(0.05)
        r = httpx.get(live.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert str(tmp_path) not in r.text
        with live.client() as c:
            assert c.post("/analyze", json=shot(1)).status_code == 503
