"""``/jobs`` on the real server (uvicorn on loopback, tiny real model) with generated films:
upload and path jobs end to end, refusals (traversal, non-video, over-size, over-quota), SSE
events, cancel. Every wait polls an observable state (the job's status), never a sleep."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli_runner import run_cli
from tests.conftest import LiveServer, run_server, test_settings
from tests.film_factory import ShotSpec, make_film

FINISHED = {"done", "failed", "cancelled"}
DEADLINE_S = 300.0
STATUS_FIELDS = {
    "job_id",
    "state",
    "source",
    "session_id",
    "title",
    "options",
    "frames_decoded",
    "frames_total",
    "shots_found",
    "shots_analysed",
    "elapsed_s",
    "eta_s",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "node",
    "cancel_requested",
    "purged_at",
}


def _specs(n: int, audio: str | None = None, frames: int = 15) -> list[ShotSpec]:
    looks = [(0.8, "bars"), (0.2, "checker"), (0.6, "circles"), (0.9, "noise"), (0.4, "flat")]
    return [
        ShotSpec(frames=frames, brightness=looks[i % 5][0], pattern=looks[i % 5][1], audio=audio)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The media root: a short film with audio, a longer silent one, a text file."""
    root = tmp_path_factory.mktemp("media")
    make_film(root / "film.mp4", _specs(4, audio="tone"), size=(160, 120))
    make_film(root / "long.mp4", _specs(16, frames=12), size=(160, 120))
    (root / "notes.mp4").write_text("not a video at all\n" * 50)
    return root


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real film outside the media root (what traversal would reach)."""
    folder = tmp_path_factory.mktemp("outside")
    make_film(folder / "secret.mp4", _specs(2), size=(160, 120))
    return folder / "secret.mp4"


def _settings(
    tiny_model_dir: Path,
    tmp: Path,
    media: Path,
    batching: dict[str, Any] | None = None,
    **jobs: Any,
) -> Any:
    return test_settings(
        tiny_model_dir,
        tmp,
        jobs={"dir": str(tmp / "jobs"), "media_roots": [str(media)], **jobs},
        server={"max_upload_mb": 1},
        batching=batching or {},
    )


def leftovers(folder: Path) -> list[str]:
    """Job folders without results: what a refused job would leave behind."""
    return [p.name for p in folder.iterdir() if p.is_dir() and not (p / "results").exists()]


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("jobs-srv")
    with run_server(_settings(tiny_model_dir, tmp, media, batch_size=2)) as live:
        yield live


def jobs_dir(server: LiveServer) -> Path:
    return server.app.state.jobs.folder


def wait_for(
    c: httpx.Client, job_id: str, pred: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll GET /jobs/{id} until ``pred(status)``; fail when the job finishes otherwise."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        r = c.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        status = r.json()
        if pred(status):
            return status
        if status["state"] in FINISHED:
            pytest.fail(f"job ended {status['state']} ({status['error']}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {status}")
        time.sleep(0.02)


def finished(c: httpx.Client, job_id: str) -> dict[str, Any]:
    return wait_for(c, job_id, lambda s: s["state"] in FINISHED, "the end")


def upload(c: httpx.Client, path: Path, options: dict[str, Any] | None = None) -> httpx.Response:
    data = {"options": json.dumps(options)} if options is not None else None
    with path.open("rb") as fh:
        return c.post("/jobs", files={"file": (path.name, fh, "video/mp4")}, data=data)


def job_count(c: httpx.Client) -> int:
    return c.get("/jobs").json()["total"]


def test_upload_job_end_to_end(server: LiveServer, media: Path, tmp_path: Path) -> None:
    with server.client() as c:
        r = upload(c, media / "film.mp4", {"title": "Harbour", "session_id": "harbour-1"})
        assert r.status_code == 202, r.text
        created = r.json()
        jid = created["job_id"]
        assert created["state"] == "queued" and created["session_id"] == "harbour-1"
        assert created["urls"] == {
            "self": f"/jobs/{jid}",
            "events": f"/jobs/{jid}/events",
            "results": f"/jobs/{jid}/results",
            "session": "/sessions/harbour-1",
        }
        status = finished(c, jid)
        assert status["state"] == "done", status
        assert set(status) == STATUS_FIELDS
        assert status["source"] == {"kind": "upload", "name": "film.mp4"}
        assert status["title"] == "Harbour" and status["error"] is None
        assert status["frames_decoded"] == status["frames_total"] == 60
        assert status["shots_found"] == status["shots_analysed"] == 4
        assert status["started_at"] and status["finished_at"] and status["eta_s"] == 0.0
        session = c.get(created["urls"]["session"]).json()
        assert session["title"] == "Harbour"
        assert [s["shot_id"] for s in session["shots"]] == [1, 2, 3, 4]
        assert all(s["audio"] is not None for s in session["shots"])  # audio features sent
        r = c.get(created["urls"]["results"])
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        listed = c.get("/jobs", params={"limit": 1}).json()
        assert listed["jobs"][0]["job_id"] == jid and listed["limit"] == 1
    # The upload is gone (keep_uploads false); the results stay for download.
    assert not (jobs_dir(server) / jid / "upload").exists()
    out = tmp_path / "results"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(out, filter="data")
    assert {"shots.jsonl", "shots.csv", "summary.json", "run.json", "frames"} <= {
        p.name for p in out.iterdir()
    }
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [r["shot_id"] for r in records] == [1, 2, 3, 4]
    by_id = {s["shot_id"]: s for s in session["shots"]}
    assert all(r["caption"] == by_id[r["shot_id"]]["caption"] for r in records)
    assert all((out / img).is_file() for r in records for img in r["images"])
    assert json.loads((out / "run.json").read_text())["complete"] is True
    for fmt, name in (("otio", "timeline.otio"), ("html", "report.html")):
        done = run_cli("export", str(out), "--format", fmt)
        assert done.returncode == 0, done.stderr
        assert (out / name).is_file()


def test_path_job_runs_and_keeps_the_film(server: LiveServer, media: Path) -> None:
    with server.client() as c:
        r = c.post("/jobs", json={"path": "film.mp4", "audio": False, "frames_per_shot": 3})
        assert r.status_code == 202, r.text
        jid = r.json()["job_id"]
        assert r.json()["session_id"] == f"job-{jid}"
        status = finished(c, jid)
        assert status["state"] == "done", status
        assert status["source"] == {"kind": "path", "name": "film.mp4"}
        assert status["options"]["frames_per_shot"] == 3 and status["options"]["audio"] is False
        shots = c.get(f"/sessions/job-{jid}").json()["shots"]
        assert [s["shot_id"] for s in shots] == [1, 2, 3, 4]
        assert all(s["audio"] is None for s in shots)
        # An absolute path under the root, and a subset of the vocabulary.
        body = {
            "path": str(media / "film.mp4"),
            "audio": False,
            "attributes": ["motion", "suspense"],
        }
        r = c.post("/jobs", json=body)
        assert r.status_code == 202, r.text
        assert finished(c, r.json()["job_id"])["state"] == "done"
        shots = c.get(r.json()["urls"]["session"]).json()["shots"]
        assert [list(s["attributes"]) for s in shots] == [["motion", "suspense"]] * 4
    assert (media / "film.mp4").is_file()


def test_paths_outside_the_media_roots_are_403(
    server: LiveServer, media: Path, outside: Path
) -> None:
    link = media / "escape.mp4"
    if not link.is_symlink():
        link.symlink_to(outside)
    rel = os.path.relpath(outside, media)
    with server.client() as c:
        before = job_count(c)
        for path in (rel, "../" + outside.name, str(outside), "escape.mp4", "/etc/passwd"):
            r = c.post("/jobs", json={"path": path})
            assert r.status_code == 403, (path, r.text)
            assert "jobs.media_roots" in r.json()["detail"]
            assert str(outside.parent) not in r.text
        assert job_count(c) == before


def test_missing_or_non_video_files_are_422_before_queueing(
    server: LiveServer, media: Path, tmp_path: Path
) -> None:
    text = tmp_path / "clip.mp4"
    text.write_bytes(b"\x00\x01 definitely not a video" * 100)
    with server.client() as c:
        before = job_count(c)
        r = c.post("/jobs", json={"path": "nothing-here.mp4"})
        assert r.status_code == 422 and "not found" in r.json()["detail"], r.text
        r = c.post("/jobs", json={"path": "notes.mp4"})
        assert r.status_code == 422 and "not a usable video" in r.json()["detail"], r.text
        r = upload(c, text)
        assert r.status_code == 422 and "clip.mp4" in r.json()["detail"], r.text
        assert str(jobs_dir(server)) not in r.text
        r = c.post("/jobs", json={"path": "film.mp4", "detector": "nope"})
        assert r.status_code == 422 and "detector" in r.json()["detail"], r.text
        r = c.post("/jobs", json={"path": "film.mp4", "attributes": ["no_such_thing"]})
        assert r.status_code == 422 and "no_such_thing" in r.json()["detail"], r.text
        r = upload(c, media / "film.mp4", {"frames_per_shot": 99})
        assert r.status_code == 422 and "max_images_per_shot" in r.json()["detail"], r.text
        assert job_count(c) == before
    assert leftovers(jobs_dir(server)) == []


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _multipart(name: str, payload: bytes) -> tuple[bytes, str]:
    boundary = "qwenjobsboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), boundary


def test_an_upload_over_max_upload_mb_is_413_and_leaves_nothing(
    server: LiveServer, media: Path
) -> None:
    body, boundary = _multipart("big.mp4", (media / "long.mp4").read_bytes() * 40)
    assert len(body) > 1024 * 1024
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    with server.client() as c:
        before = job_count(c)
        # Streamed without a Content-Length: the limit is met while reading.
        r = c.post("/jobs", content=_chunks(body), headers=headers)
        assert r.status_code == 413, r.text
        assert "server.max_upload_mb" in r.json()["detail"]
    with server.client() as c:
        # Declared over the limit: refused before the body is read.
        r = c.post("/jobs", content=body, headers=headers)
        assert r.status_code == 413, r.text
        assert job_count(c) == before
    assert leftovers(jobs_dir(server)) == []


def test_over_quota_is_507(tiny_model_dir: Path, media: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_model_dir, tmp_path, media, max_disk_gb=0.00002)  # ~21 KB
    body, boundary = _multipart("long.mp4", (media / "long.mp4").read_bytes() * 2)
    assert len(body) > 0.00002 * 1024**3
    with run_server(settings) as live, live.client() as c:
        r = upload(c, media / "long.mp4")  # declared size over the quota
        assert r.status_code == 507, r.text
        assert "jobs.max_disk_gb" in r.json()["detail"]
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        r = c.post("/jobs", content=_chunks(body, 8192), headers=headers)  # found while reading
        assert r.status_code == 507, r.text
        # A folder already over the quota refuses path jobs too.
        (live.app.state.jobs.folder / "filler.bin").write_bytes(b"\0" * 200_000)
        r = c.post("/jobs", json={"path": "film.mp4"})
        assert r.status_code == 507, r.text
        assert job_count(c) == 0
        assert [p.name for p in live.app.state.jobs.folder.iterdir()] == ["filler.bin"]


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse an SSE stream into {"id", "event", "data"} dicts."""
    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if message:
                yield message
            message = {}
            continue
        field, _, value = line.partition(": ")
        message[field] = json.loads(value) if field == "data" else value


def test_events_stream_status_then_end(server: LiveServer, media: Path) -> None:
    with server.client() as c:
        # Two jobs, one running at a time: the second waits queued, so its stream must beat
        # (the same status again) while nothing changes, then follow it to the end.
        first = c.post("/jobs", json={"path": "long.mp4", "audio": False}).json()["job_id"]
        second = c.post("/jobs", json={"path": "film.mp4", "audio": False}).json()["job_id"]
        with c.stream("GET", f"/jobs/{second}/events") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = list(_events(r))
        assert events[-1]["event"] == "end" and events[-1]["data"]["state"] == "done"
        assert all(e["event"] == "status" for e in events[:-1])
        assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
        assert all(set(e["data"]) == STATUS_FIELDS for e in events)
        states = [e["data"]["state"] for e in events]
        assert states[0] == "queued" and "decoding" in states, states
        assert states.index("decoding") > 0
        assert finished(c, first)["state"] == "done"
        # A finished job's stream is its end event, at once.
        with c.stream("GET", f"/jobs/{second}/events") as r:
            again = list(_events(r))
        assert [e["event"] for e in again] == ["end"]
        assert c.get("/jobs/0000000000000000/events").status_code == 404


def test_cancel_keeps_partial_shots_and_removes_the_upload(
    tiny_model_dir: Path, media: Path, tmp_path: Path
) -> None:
    # One shot per batch and per engine step: the job is still running when cancelled.
    settings = _settings(
        tiny_model_dir,
        tmp_path,
        media,
        {"max_batch_size": 1},
        batch_size=1,
        in_flight=1,
        decode_workers=2,  # worker processes that the cancel must stop
    )
    with run_server(settings) as live, live.client() as c:
        r = upload(c, media / "long.mp4", {"audio": False})
        assert r.status_code == 202, r.text
        jid, sid = r.json()["job_id"], r.json()["session_id"]
        wait_for(c, jid, lambda s: s["shots_analysed"] >= 1, "a first analysed shot")
        r = c.delete(f"/jobs/{jid}")
        assert r.status_code == 200, r.text
        status = r.json()
        assert status["state"] == "cancelled" and status["finished_at"]
        assert c.get(f"/jobs/{jid}").json()["state"] == "cancelled"
        stored = [s["shot_id"] for s in c.get(f"/sessions/{sid}").json()["shots"]]
        assert 1 <= len(stored) < 16 and stored == list(range(1, len(stored) + 1))
        assert not (live.app.state.jobs.folder / jid / "upload").exists()
        r = c.delete(f"/jobs/{jid}")
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]
        assert c.get(f"/jobs/{jid}/results").status_code == 409
        r = c.get(f"/jobs/{jid}/results", params={"partial": 1})
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            names = tar.getnames()
        assert "shots.jsonl" in names
        assert c.delete("/jobs/0000000000000000").status_code == 404
        # No thread or decode process of the job is left running.
        assert not live.app.state.jobs._live
        assert multiprocessing.active_children() == []


def test_with_a_postgresql_store_jobs_live_in_the_shared_database(
    request: pytest.FixtureRequest, tiny_model_dir: Path, media: Path, tmp_path: Path
) -> None:
    """Sessions and jobs both go to the shared PostgreSQL store (no SQLite file of jobs): any
    server on that database sees the job, and its row names the node that ran it."""
    from qwen_server.store.postgres import PostgresSessionStore
    from tests.conftest import new_database

    postgres = request.getfixturevalue("postgres")
    name = new_database(postgres, "jobs")
    try:
        settings = test_settings(
            tiny_model_dir,
            tmp_path,
            store={"url": postgres.url(name)},
            store_password=postgres.password,
            jobs={"dir": str(tmp_path / "jobs"), "media_roots": [str(media)], "node_id": "box-1"},
        )
        with run_server(settings) as live, live.client() as c:
            assert live.app.state.store.describe().startswith("PostgreSQL")
            r = c.post("/jobs", json={"path": "film.mp4", "audio": False})
            assert r.status_code == 202, r.text
            jid = r.json()["job_id"]
            status = finished(c, jid)
            assert status["state"] == "done" and status["node"] == "box-1", status
            shots = c.get(f"/sessions/{status['session_id']}").json()["shots"]
            assert [s["shot_id"] for s in shots] == [1, 2, 3, 4]
            assert not (tmp_path / "jobs" / "jobs.sqlite3").exists()
            assert c.get("/jobs").json()["total"] == 1
        other = PostgresSessionStore(postgres.url(name), password=postgres.password)
        other.open()
        try:
            row = other.jobs_table().get(jid)
        finally:
            other.close()
        assert row is not None and row.state == "done" and row.owner == "box-1"
    finally:
        postgres.drop_database(name)
