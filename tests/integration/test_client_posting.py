"""Posting to real HTTP servers on loopback: spread, retries, failover, auth, unreachable.

The servers are ``tests/fake_analysis_server.py`` (FastAPI + uvicorn, contract-validated), so
every request really goes over HTTP; nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.api import ServerPool
from client.errors import AuthFailed, ServerUnreachable
from client.media.probe import probe
from client.options import AudioOptions, ExtractOptions, PostingOptions
from client.pipeline.run import RunReport, analyze
from tests.fake_analysis_server import FakeAnalysisServer, free_port
from tests.film_factory import FilmTruth, make_film, standard_shots

TOKEN = "tok-123"
FAST_RETRY = {"backoff_base": 0.01, "backoff_cap": 0.05}
NO_AUDIO = ExtractOptions(audio=AudioOptions(enabled=False))


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return make_film(tmp_path_factory.mktemp("post") / "film.mp4", standard_shots())


@pytest.fixture
def servers() -> Iterator[tuple[FakeAnalysisServer, FakeAnalysisServer]]:
    with FakeAnalysisServer(token=TOKEN) as a, FakeAnalysisServer(token=TOKEN) as b:
        yield a, b


def _run(
    film: FilmTruth,
    out: Path,
    urls: list[str],
    token: str = TOKEN,
    options: ExtractOptions = NO_AUDIO,
    **posting: object,
) -> RunReport:
    settings = {"batch_size": 1, "in_flight": 2, **FAST_RETRY, **posting}
    pool = ServerPool(urls, token, PostingOptions(**settings))
    try:
        return analyze(probe(film.path), out, options, pool, "film.mp4", "film.mp4")
    finally:
        pool.close()


def _ids(out: Path) -> list[int]:
    return [json.loads(line)["shot_id"] for line in (out / "shots.jsonl").read_text().splitlines()]


def test_batches_spread_over_both_servers(film: FilmTruth, servers, tmp_path: Path) -> None:
    a, b = servers
    report = _run(film, tmp_path, [a.url, b.url], options=ExtractOptions())  # with audio
    n = len(film.shots)
    assert report.shots == n and report.written_now == n
    assert a.recorded.answered >= 1 and b.recorded.answered >= 1
    assert sorted(a.shot_ids + b.shot_ids) == list(range(1, n + 1))  # each shot exactly once
    assert _ids(tmp_path) == list(range(1, n + 1))
    assert set(a.recorded.images_per_shot + b.recorded.images_per_shot) == {5}
    assert set(a.recorded.sessions) | set(b.recorded.sessions) == {"film.mp4"}
    assert a.recorded.auth_headers[0] == f"Bearer {TOKEN}"
    rec = json.loads((tmp_path / "shots.jsonl").read_text().splitlines()[2])
    assert rec["audio_class"] == "silence" and rec["audio_features"]["rms_energy_mean"] < 1e-3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["shot_count"] == n and summary["model"].startswith("fake-qwen")


def test_batch_size_groups_shots(film: FilmTruth, servers, tmp_path: Path) -> None:
    a, b = servers
    _run(film, tmp_path, [a.url], batch_size=2)
    assert a.recorded.answered == 3  # 5 shots in batches of 2


def _release_when(server: FakeAnalysisServer, ready: Callable[[], bool]) -> None:
    """Release the server's held requests once ``ready()`` holds (at most 60 s, so a broken
    run fails on its assertions instead of hanging)."""
    deadline = time.monotonic() + 60
    while not ready() and time.monotonic() < deadline and not server.behaviour.release.is_set():
        time.sleep(0.01)
    server.behaviour.release.set()


def test_a_failing_server_leaves_the_rotation(
    film: FilmTruth, servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = servers
    b.behaviour.always_fail = True  # 503 without Retry-After: a hard failure every time
    # a holds every batch until b has failed 3 times, and b's retries wait no backoff: so b is
    # always the idle, ready server the next attempt goes to, and it gets its 3 attempts
    # whatever the timing (once a answered every shot, b would never be asked again).
    a.behaviour.hold_after = 0
    released = threading.Thread(target=_release_when, args=(a, lambda: b.requests >= 3))
    released.start()
    try:
        report = _run(
            film,
            tmp_path,
            [a.url, b.url],
            max_consecutive_failures=3,
            backoff_base=0.0,
            backoff_cap=0.0,
        )
    finally:
        a.behaviour.release.set()
        released.join()
    assert report.shots == len(film.shots)
    assert b.recorded.answered == 0 and b.requests == 3
    assert sorted(a.shot_ids) == list(range(1, len(film.shots) + 1))
    assert any("left the rotation" in r.getMessage() for r in caplog.records)
    assert report.servers[b.url]["failed"] == 3


def test_dropped_connections_are_retried(film: FilmTruth, servers, tmp_path: Path) -> None:
    a, b = servers
    a.behaviour.drop = 1
    b.behaviour.drop = 1
    report = _run(film, tmp_path, [a.url, b.url])
    assert report.shots == len(film.shots)
    assert sorted(a.shot_ids + b.shot_ids) == list(range(1, len(film.shots) + 1))
    assert a.requests + b.requests == len(film.shots) + 2


def test_retry_after_is_honoured_without_dropping_the_server(
    film: FilmTruth, servers, tmp_path: Path
) -> None:
    a, _ = servers
    a.behaviour.fail_503 = 2
    a.behaviour.retry_after = 0.2
    a.behaviour.fail_429 = 3
    # "Come back later" answers do not count as hard failures, even past the limit of 2.
    report = _run(film, tmp_path, [a.url], max_consecutive_failures=2)
    assert report.shots == len(film.shots)
    assert a.requests == len(film.shots) + 5


def test_wrong_token_stops_the_run_at_once(film: FilmTruth, servers, tmp_path: Path) -> None:
    a, b = servers
    with pytest.raises(AuthFailed, match="401"):
        _run(film, tmp_path, [a.url, b.url], token="wrong")
    assert a.requests + b.requests <= 2  # no retries: at most the requests already in flight
    assert not (tmp_path / "shots.jsonl").exists() or _ids(tmp_path) == []


def test_no_server_left_fails_clearly(film: FilmTruth, servers, tmp_path: Path) -> None:
    a, b = servers
    a.behaviour.always_fail = b.behaviour.always_fail = True
    with pytest.raises(ServerUnreachable, match="no server left") as exc:
        _run(film, tmp_path, [a.url, b.url], max_consecutive_failures=2, retry_for=0.5)
    assert a.url in str(exc.value) and b.url in str(exc.value)


def test_unreachable_servers_are_detected_before_decoding(
    film: FilmTruth, servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = servers
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match="cannot reach any server"):
        _run(film, tmp_path / "none", [dead], retry_for=0.3)
    assert not (tmp_path / "none" / "shots.jsonl").exists()
    caplog.clear()
    report = _run(film, tmp_path / "one", [dead, a.url])
    assert report.shots == len(film.shots) and a.recorded.answered == len(film.shots)
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_server_stopping_mid_run_fails_over(film: FilmTruth, tmp_path: Path) -> None:
    with FakeAnalysisServer(token=TOKEN) as a:
        b = FakeAnalysisServer(token=TOKEN).start()
        a.behaviour.delay = b.behaviour.delay = 0.3
        result: dict[str, object] = {}

        def work() -> None:
            try:
                result["report"] = _run(film, tmp_path, [a.url, b.url])
            except Exception as exc:  # handed to the assertion below
                result["error"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        while b.recorded.answered < 1 and thread.is_alive():
            time.sleep(0.01)
        b.stop()  # B goes away mid-run: its next requests are refused
        thread.join(timeout=120)
        assert "error" not in result, result.get("error")
        report = result["report"]
        assert isinstance(report, RunReport) and report.shots == len(film.shots)
        assert _ids(tmp_path) == list(range(1, len(film.shots) + 1))
        assert a.recorded.answered >= 1


def test_health_reports_each_server_and_the_token(servers) -> None:
    a, _ = servers
    dead = f"http://127.0.0.1:{free_port()}"
    pool = ServerPool([a.url, dead], "bad-token")
    try:
        entries = pool.health(check_token=True)
    finally:
        pool.close()
    assert entries[0]["reachable"] and entries[0]["health"]["status"] == "ok"
    assert entries[0]["token_ok"] is False
    assert entries[1]["reachable"] is False


@pytest.fixture(autouse=True)
def _quiet_http_logs() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
