"""``qwen-client submit`` and ``qwen-client jobs`` against the real server's ``/jobs`` (tiny real
model on CPU, uvicorn on loopback), the CLI in its own process as a user runs it, with
generated films. Every wait polls an observable state (a job's status, a line of output).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli_runner import REPO, as_in_a_terminal, run_cli
from tests.conftest import LiveServer, run_server, test_settings
from tests.film_factory import FilmTruth, ShotSpec, make_film

pytestmark = pytest.mark.slow

DEADLINE_S = 300.0
LOOKS = [(0.8, "bars"), (0.2, "checker"), (0.6, "circles"), (0.9, "noise"), (0.4, "flat")]


def _specs(n: int, frames: int, audio: str | None) -> list[ShotSpec]:
    return [
        ShotSpec(frames=frames, brightness=LOOKS[i % 5][0], pattern=LOOKS[i % 5][1], audio=audio)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FilmTruth]:
    root = tmp_path_factory.mktemp("media")
    return {
        "film": make_film(root / "film one.mp4", _specs(4, 18, "tone"), size=(160, 120)),
        "long": make_film(root / "long.mp4", _specs(40, 16, None), size=(160, 120)),
    }


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, media: dict[str, FilmTruth], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("submit-srv")
    root = media["film"].path.parent
    settings = test_settings(
        tiny_model_dir,
        tmp,
        jobs={"dir": str(tmp / "jobs"), "media_roots": [str(root)]},
        # Two shots per generate call: the 40-shot film is still running when it is stopped.
        batching={"max_batch_size": 2},
    )
    with run_server(settings) as live:
        yield live


def _cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--server", server.url, token=server.api_key, timeout=600)


def _spawn(server: LiveServer, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "QWEN_SERVER_TOKEN": server.api_key, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "client.cli", *args, "--server", server.url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_in_a_terminal,
    )


def _job_id_of(proc: subprocess.Popen[str]) -> str:
    """The job id from submit's first line ("job ID queued on URL ...")."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("job ") and " queued on " in line, line
    return line.split()[1]


def _wait(server: LiveServer, job_id: str, pred: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    with server.client() as c:
        while True:
            status = c.get(f"/jobs/{job_id}").json()
            if pred(status):
                return status
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {status}"
            time.sleep(0.02)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def test_submit_uploads_follows_and_writes_the_analyze_folder(
    server: LiveServer, media: dict[str, FilmTruth], tmp_path: Path
) -> None:
    film = media["film"]
    out = tmp_path / "out"
    done = _cli(server, "submit", str(film.path), "--out", str(out), "--title", "Film One")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1]
    assert f"job {job_id} done: 4 shots" in done.stdout and str(out) in done.stdout
    assert "report.html" in done.stdout and "timeline.otio" in done.stdout
    records = _records(out)
    ranges = [(r["start_frame"], r["end_frame"]) for r in records]
    assert ranges == [tuple(r) for r in film.shot_ranges]
    assert all(r["attributes"] and r["caption"] is not None for r in records)
    for name in ("shots.csv", "summary.json", "run.json", "report.html", "timeline.otio"):
        assert (out / name).is_file(), name
    assert len(list((out / "frames").glob("*.jpg"))) == sum(len(r["images"]) for r in records)
    assert not list(tmp_path.glob(".out.*"))  # no staging folder or tar left behind
    # Exports link the media: the folder points at this machine's film, not the server's upload.
    source = json.loads((out / "run.json").read_text())["source"]
    summary_film = json.loads((out / "summary.json").read_text())["film"]
    assert source["path"] == summary_film["path"] == str(film.path.resolve())
    assert source["server_path"] != source["path"]
    import opentimelineio as otio

    clip = otio.adapters.read_from_file(str(out / "timeline.otio")).find_clips()[0]
    url = clip.media_reference.target_url  # relative to the timeline file's folder
    assert (out / url).resolve() == film.path.resolve(), url

    # The session on the server holds the same shots; the folder works with the client's tools.
    with server.client() as c:
        session = c.get(f"/sessions/job-{job_id}").json()
    assert session["title"] == "Film One" and len(session["shots"]) == 4
    for fmt, name in (("edl", "timeline.edl"), ("html", "report.html")):
        exported = run_cli("export", str(out), "--format", fmt)
        assert exported.returncode == 0, exported.stderr
        assert (out / name).is_file()

    # The same film analysed by the client itself: the same shots (one extraction code).
    local = tmp_path / "local"
    analyzed = _cli(server, "analyze", str(film.path), "--out", str(local), "-q", "--no-exports")
    assert analyzed.returncode == 0, analyzed.stderr
    assert [(r["start_frame"], r["end_frame"]) for r in _records(local)] == ranges
    assert [r["sample_frames"] for r in _records(local)] == [r["sample_frames"] for r in records]

    listed = _cli(server, "jobs")
    assert listed.returncode == 0 and job_id in listed.stdout and "done" in listed.stdout
    shown = _cli(server, "jobs", "show", job_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "done"
    again = _cli(server, "submit", str(film.path), "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr  # refused before any upload


def test_submit_a_path_on_the_server(
    server: LiveServer, media: dict[str, FilmTruth], tmp_path: Path
) -> None:
    film = media["film"]
    out = tmp_path / "by-path"
    done = _cli(
        server, "submit", "film one.mp4", "--on-server-path", "film one.mp4",
        "--out", str(out), "--no-audio", "--frames-per-shot", "2", "--session", "by-path", "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = _records(out)
    assert len(records) == 4 and all(len(r["sample_frames"]) == 2 for r in records)
    assert all(r.get("audio_features") is None for r in records)
    outside = _cli(server, "submit", "x.mp4", "--on-server-path", "../../etc/passwd", "-q",
                   "--out", str(tmp_path / "x"))  # fmt: skip
    assert outside.returncode == 5 and "HTTP 403" in outside.stderr, outside.stderr
    assert not (tmp_path / "x").exists()
    assert film.path.exists()  # a path job never removes the film


def test_ctrl_c_leaves_the_job_running_and_jobs_follow_fetches_it(
    server: LiveServer, media: dict[str, FilmTruth], tmp_path: Path
) -> None:
    out = tmp_path / "long"
    proc = _spawn(server, "submit", str(media["long"].path), "--out", str(out), "-q")
    job_id = _job_id_of(proc)
    # At once: the job (40 shots to analyse) is far from done when the line is printed, and
    # from that line on Ctrl-C leaves it running (waiting for the server to report it started
    # first let a loaded machine finish the job before the signal landed).
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"job {job_id} keeps running" in err
    assert f"qwen-client jobs follow {job_id} --server {server.url} --out {out}" in err
    assert f"qwen-client jobs cancel {job_id} --server {server.url}" in err
    assert not out.exists()
    status = _wait(server, job_id, lambda s: s["state"] in ("done", "failed", "cancelled"), "end")
    assert status["state"] == "done" and status["shots_analysed"] == 40
    followed = _cli(server, "jobs", "follow", job_id, "--out", str(out), "-q")
    assert followed.returncode == 0, followed.stderr
    assert len(_records(out)) == 40


def test_a_cancelled_job_is_a_clear_error(
    server: LiveServer, media: dict[str, FilmTruth], tmp_path: Path
) -> None:
    out = tmp_path / "cancelled"
    proc = _spawn(server, "submit", str(media["long"].path), "--out", str(out), "-q")
    job_id = _job_id_of(proc)
    _wait(server, job_id, lambda s: s["shots_analysed"] >= 1, "a first analysed shot")
    cancelled = _cli(server, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id}: cancelled" in cancelled.stdout
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert f"job {job_id} was cancelled" in err and f"session job-{job_id}" in err
    assert not out.exists()
    again = _cli(server, "jobs", "cancel", job_id)
    assert again.returncode == 5 and "HTTP 409" in again.stderr


def test_refusals_exit_codes(server: LiveServer, media: dict[str, FilmTruth], tmp_path: Path):
    film = str(media["film"].path)
    with server.client() as c:
        before = c.get("/jobs").json()["total"]
    bad_token = run_cli("submit", film, "-s", server.url, "--out", str(tmp_path / "a"),
                        token="wrong-token", timeout=120)  # fmt: skip
    assert bad_token.returncode == 4, bad_token.stderr
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video\n" * 100)
    refused = _cli(server, "submit", str(not_a_video), "--out", str(tmp_path / "b"), "-q")
    assert refused.returncode == 5 and "HTTP 422" in refused.stderr, refused.stderr
    flag = _cli(server, "submit", film, "--out", str(tmp_path / "c"), "--max-side", "224")
    assert flag.returncode == 2 and "--max-side" in flag.stderr
    unknown = _cli(server, "jobs", "show", "0000000000000000")
    assert unknown.returncode == 5 and "HTTP 404" in unknown.stderr
    with server.client() as c:
        assert c.get("/jobs").json()["total"] == before  # nothing was queued
    assert not any((tmp_path / d).exists() for d in "abc")
    assert httpx.get(server.url + "/health").status_code == 200
