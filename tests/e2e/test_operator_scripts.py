"""The operator scripts for real: setup (install skipped), start, health, analyse, drain, stop."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.film_factory import ShotSpec, make_film
from tests.payloads import shot

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ops_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the scripts: private key home, run dir, store, port; install skipped."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QWEN_") and k not in ("NEBIUS_API_KEY",)
    }
    env.update(
        SKIP_INSTALL="1",
        VENV=sys.prefix,  # the scripts use the environment running these tests
        QWEN_HOME=str(tmp_path / "home"),
        RUN_DIR=str(tmp_path / "run"),
        QWEN_STORE__PATH=str(tmp_path / "sessions.sqlite3"),
        QWEN_SERVER__PORT=str(_free_port()),
        QWEN_MODEL__DEVICE="cpu",
        START_TIMEOUT="240",
    )
    return env


def sh(
    script: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_setup_makes_a_private_key_file_once(ops_env) -> None:
    first = sh("setup.sh", "--no-model", env=ops_env)
    assert first.returncode == 0, first.stderr
    keyfile = Path(ops_env["QWEN_HOME"]) / "api_key"
    assert "created an API key file" in first.stdout and str(keyfile) in first.stdout
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    key = keyfile.read_text()
    assert key.strip() not in first.stdout + first.stderr  # the key itself is never printed
    second = sh("setup.sh", "--no-model", env=ops_env)
    assert second.returncode == 0 and "API key file exists" in second.stdout
    assert keyfile.read_text() == key


def test_start_health_analyse_metrics_stop(ops_env, tiny_model_dir, tmp_path) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    key = (Path(ops_env["QWEN_HOME"]) / "api_key").read_text().strip()
    url = f"http://127.0.0.1:{ops_env['QWEN_SERVER__PORT']}"
    pid_file = Path(ops_env["RUN_DIR"]) / "qwen-server.pid"
    started = sh("start_server.sh", "--model", str(tiny_model_dir), env=ops_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert pid_file.is_file()
        again = sh("start_server.sh", "--model", str(tiny_model_dir), env=ops_env)
        assert again.returncode == 0 and "already running" in again.stdout

        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok"

        film = make_film(
            tmp_path / "film.mp4",
            [ShotSpec(frames=30, brightness=0.8), ShotSpec(frames=30, brightness=0.1)],
        )
        out = tmp_path / "out"
        run = subprocess.run(
            [
                str(Path(sys.prefix) / "bin" / "qwen-client"),
                "analyze",
                str(film.path),
                "--server",
                url,
                "--out",
                str(out),
                "--quiet",
            ],
            env={**ops_env, "QWEN_SERVER_TOKEN": key},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        lines = (out / "shots.jsonl").read_text().splitlines()
        assert len(lines) == 2
        assert key not in run.stdout + run.stderr

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            assert httpx.get(url + "/metrics").status_code == 401
            metrics = c.get("/metrics").text
        assert 'qwen_requests_total{method="POST",route="/analyze_batch",status="200"}' in metrics
        assert "qwen_batch_size_bucket" in metrics and "qwen_shots_analyzed_total 2.0" in metrics

        log = (Path(ops_env["RUN_DIR"]) / "qwen-server.log").read_text()
        assert "POST /analyze_batch status=200" in log and "shots=2" in log
        assert key not in log
    finally:
        stopped = sh("stop_server.sh", env=ops_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not pid_file.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)
    twice = sh("stop_server.sh", env=ops_env)
    assert twice.returncode == 0 and "not running" in twice.stdout


class HeldRequest:
    """A real ``POST /analyze_batch`` whose body the test sends only when it chooses.

    The request goes out with ``Expect: 100-continue``; uvicorn answers ``100 Continue`` only
    when the app first reads the body, i.e. after the server counted the request as in flight.
    Until :meth:`finish` sends the body, the request stays in flight: the drain cannot end.
    """

    def __init__(self, port: int, key: str, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        head = (
            "POST /analyze_batch HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n"
            "Connection: close\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        interim = self._read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim

    def _read_until(self, marker: bytes) -> bytes:
        data = b""
        while marker not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def finish(self) -> tuple[int, dict]:
        """Send the body; return the final status and JSON body (the server closes after)."""
        self.sock.sendall(self.body)
        raw = b""
        while chunk := self.sock.recv(65536):
            raw += chunk
        head, _, payload = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a true value (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def test_stop_drains_requests_in_flight(ops_env, tiny_model_dir) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    key = (Path(ops_env["QWEN_HOME"]) / "api_key").read_text().strip()
    port = int(ops_env["QWEN_SERVER__PORT"])
    url = f"http://127.0.0.1:{port}"
    env = {**ops_env, "QWEN_SERVER__SHUTDOWN_TIMEOUT_S": "120"}
    started = sh("start_server.sh", "--model", str(tiny_model_dir), env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    headers = {"Authorization": f"Bearer {key}"}
    held = None
    stopper = None
    try:
        body = json.dumps({"shots": [shot(i, n_frames=5) for i in range(1, 5)]}).encode()
        held = HeldRequest(port, key, body)  # in flight from here on, until finish()
        stopper = subprocess.Popen(
            ["bash", str(REPO_ROOT / "scripts" / "stop_server.sh")],
            env=ops_env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

        def draining():
            r = httpx.get(url + "/health", timeout=10)
            return r if r.json()["status"] == "draining" else None

        health = wait_for(draining, timeout=60, what="/health to report draining after SIGTERM")
        assert health.status_code == 503 and health.headers["retry-after"]

        # The drain is on and cannot end while the held request is open: new work gets 503.
        refused = httpx.post(url + "/analyze", json=shot(1), headers=headers, timeout=30)
        assert refused.status_code == 503, refused.text
        assert "shutting down" in refused.json()["detail"] and refused.headers["retry-after"]
        assert stopper.poll() is None, "the server must not exit with a request in flight"

        status, answer = held.finish()  # the request in flight is analysed during the drain
        assert status == 200, answer
        assert [r["shot_id"] for r in answer["results"]] == [1, 2, 3, 4]
        out, _ = stopper.communicate(timeout=120)
        assert stopper.returncode == 0 and "qwen-server stopped" in out
    finally:
        if held is not None:
            held.close()
        if stopper is not None and stopper.poll() is None:
            stopper.kill()
            stopper.communicate()
        sh("stop_server.sh", env=ops_env)
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_start_fails_clearly_with_log_tail(ops_env, tmp_path) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    r = sh("start_server.sh", "--model", str(empty), env=ops_env)
    assert r.returncode == 1
    assert "exited during start-up" in r.stderr and "model" in r.stderr
    assert not (Path(ops_env["RUN_DIR"]) / "qwen-server.pid").exists()


def test_start_refuses_bad_settings_before_starting(ops_env) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    r = sh("start_server.sh", env={**ops_env, "QWEN_MODEL__PLACEMENT": "sideways"})
    assert r.returncode == 2 and "model.placement" in r.stderr


def test_analyze_film_script_end_to_end(ops_env, tiny_model_dir, tmp_path, decoys) -> None:
    film = make_film(
        tmp_path / "my film.mp4",
        [
            ShotSpec(frames=25, brightness=0.9, audio="tone"),
            ShotSpec(frames=25, brightness=0.1, audio="noise"),
            ShotSpec(frames=25, brightness=0.5, audio="silence"),
        ],
    )
    out = tmp_path / "results"
    # A PID file left by a server that died, its PID now another process's: the script starts
    # its own server and, on exit, stops that one, never the decoy.
    pid_file = Path(ops_env["RUN_DIR"]) / "qwen-server.pid"
    decoy = decoys("sleep")
    write_pid_file(pid_file, decoy.pid, ops_env)
    try:
        r = sh(
            "analyze_film.sh",
            str(film.path),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--",
            "--quiet",
            env=ops_env,
            timeout=600,
        )
    finally:
        if pid_file.exists() and int(pid_file.read_text().split()[0]) != decoy.pid:
            sh("stop_server.sh", env=ops_env)  # only if the script left its server running
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removing stale PID file" in r.stdout and "qwen-server stopped" in r.stdout
    assert_alive(decoy)
    rows = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [row["shot_id"] for row in rows] == [1, 2, 3]
    assert rows[0]["attributes"]["darkness"] < rows[1]["attributes"]["darkness"]  # bright, dark
    assert (out / "summary.json").is_file() and (out / "shots.csv").is_file()
    # The script stopped the server it started.
    assert not pid_file.exists()


# -- PID files are not trusted blindly ------------------------------------------------------


@pytest.fixture
def decoys():
    """Start decoy processes (real, harmless ``sleep``s); every one is killed afterwards."""
    started: list[subprocess.Popen] = []

    def start(argv0: str = "sleep") -> subprocess.Popen:
        # Popen returns once the exec succeeded, so /proc and ps already show the decoy's argv.
        proc = subprocess.Popen([argv0, "300"], executable=shutil.which("sleep"))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


def write_pid_file(path: Path, pid: int, env: dict[str, str], token: str | None = None) -> str:
    """Write a PID file as start_server.sh does (the real writer in scripts/lib/pidfile.sh);
    ``token`` replaces the recorded start token. Returns the file's line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "bash",
            "-c",
            '. scripts/lib/pidfile.sh && pidfile_write "$1" "$2"',
            "-",
            str(path),
            str(pid),
        ],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        timeout=30,
    )
    if token is not None:
        path.write_text(f"{pid} {token}\n")
    return path.read_text()


def assert_alive(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, f"decoy pid {proc.pid} was signalled (exit {proc.returncode})"


@pytest.mark.parametrize("pid_source", ["proc", "ps"])
def test_stop_leaves_processes_that_are_not_the_recorded_server_alone(
    ops_env, decoys, pid_source
) -> None:
    env = {**ops_env, "PIDFILE_NO_PROC": "1" if pid_source == "ps" else "0"}
    pid_file = Path(env["RUN_DIR"]) / "qwen-server.pid"

    cases = {
        # Another program under a reused PID, even with its own true start token beside it.
        "another program": (decoys("sleep"), None, "not qwen-server"),
        # A PID file with only a PID in it, naming another program.
        "bare pid": (decoys("sleep"), "", "not qwen-server"),
        # A qwen-server, but not the start recorded: the PID was reused by a later server.
        "a later qwen-server": (decoys("qwen-server"), "proc:1", "started later"),
    }
    for name, (decoy, token, why) in cases.items():
        write_pid_file(pid_file, decoy.pid, env, token)
        r = sh("stop_server.sh", env=env, timeout=60)
        assert r.returncode == 0, (name, r.stdout + r.stderr)
        assert "stale PID file" in r.stdout and why in r.stdout, (name, r.stdout)
        assert "signalled nothing" in r.stdout, (name, r.stdout)
        assert not pid_file.exists(), name
        assert_alive(decoy)

    # The check is no blanket refusal: the recorded process itself (named qwen-server, same
    # start token) is stopped. The sleep dies of SIGTERM.
    target = decoys("qwen-server")
    write_pid_file(pid_file, target.pid, env)
    r = sh("stop_server.sh", env=env, timeout=60)
    assert r.returncode == 0 and "qwen-server stopped" in r.stdout, r.stdout + r.stderr
    assert target.wait(timeout=30) == -signal.SIGTERM
    assert not pid_file.exists()


def test_start_and_stop_see_through_a_decoy_pid_file(ops_env, tiny_model_dir, decoys) -> None:
    assert sh("setup.sh", "--no-model", env=ops_env).returncode == 0
    url = f"http://127.0.0.1:{ops_env['QWEN_SERVER__PORT']}"
    pid_file = Path(ops_env["RUN_DIR"]) / "qwen-server.pid"
    decoy = decoys("sleep")

    # stop_server.sh: the decoy's PID is reported as a stale file and left alone.
    write_pid_file(pid_file, decoy.pid, ops_env)
    stopped = sh("stop_server.sh", env=ops_env, timeout=60)
    assert stopped.returncode == 0 and "stale PID file" in stopped.stdout, stopped.stdout
    assert_alive(decoy)

    # start_server.sh: not "already running": it starts a real server and records that one.
    write_pid_file(pid_file, decoy.pid, ops_env)
    started = sh("start_server.sh", "--model", str(tiny_model_dir), env=ops_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "already running" not in started.stdout
        assert "removing stale PID file" in started.stdout
        assert_alive(decoy)
        server_pid = int(pid_file.read_text().split()[0])
        assert server_pid != decoy.pid
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
        again = sh("start_server.sh", "--model", str(tiny_model_dir), env=ops_env)
        assert again.returncode == 0 and f"already running (pid {server_pid}" in again.stdout
    finally:
        stopped = sh("stop_server.sh", env=ops_env)
    assert stopped.returncode == 0 and "qwen-server stopped" in stopped.stdout, stopped.stdout
    assert_alive(decoy)
    assert not pid_file.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


# -- --help ---------------------------------------------------------------------------------

SCRIPTS = sorted(p.name for p in (REPO_ROOT / "scripts").glob("*.sh"))


@pytest.fixture
def stub_venv(tmp_path: Path) -> Path:
    """A virtualenv whose every program only records that it was run (and with what)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "python3", "pip", "qwen-server", "qwen-client"):
        exe = venv / "bin" / name
        exe.write_text(f'#!/bin/sh\necho "{name} $*" >>"{tmp_path / "ran.log"}"\n')
        exe.chmod(0o755)
    digest = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / f".installed-{digest}").touch()  # test.sh: "installed", go straight to pytest
    (venv / "share").mkdir()
    (venv / "share" / "qwen.tiktoken").write_text("x")  # and Qwen2's vocabulary is there
    return venv


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_script_answers_help_without_side_effects(
    script, flag, ops_env, stub_venv, tmp_path
) -> None:
    env = {**ops_env, "VENV": str(stub_venv), "PYTHON": str(stub_venv / "bin" / "python")}
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    arg_sets = [[flag]]
    if script == "start_server.sh":  # its other arguments go to qwen-server: --help is caught
        arg_sets.append(["--model", "some/model", flag])
    for args in arg_sets:
        r = sh(script, *args, env=env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.lower().startswith("usage"), r.stdout[:200]
        assert f"scripts/{script}" in r.stdout.splitlines()[0]
        assert "set -euo" not in r.stdout and r.stderr == ""
    # Nothing was run, created or installed: no stub program ran, no run dir, no key home.
    assert not (tmp_path / "ran.log").exists(), (tmp_path / "ran.log").read_text()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_test_script_passes_its_arguments_to_pytest(ops_env, stub_venv, tmp_path) -> None:
    r = sh("test.sh", "-x", "-q", "tests/unit", env={**ops_env, "VENV": str(stub_venv)})
    assert r.returncode == 0, r.stdout + r.stderr
    ran = (tmp_path / "ran.log").read_text().splitlines()
    assert ran == ["python -m pytest -p no:cacheprovider -x -q tests/unit"]


def test_test_script_fetches_qwen2_vocabulary_when_missing(ops_env, stub_venv, tmp_path) -> None:
    """Without ``share/qwen.tiktoken`` the test setup downloads the pinned dashscope wheel and
    takes the file out of it, then runs pytest; a failed fetch only skips those tests."""
    (stub_venv / "share" / "qwen.tiktoken").unlink()
    r = sh("test.sh", "-q", "tests/unit", env={**ops_env, "VENV": str(stub_venv)})
    assert r.returncode == 0, r.stdout + r.stderr
    ran = (tmp_path / "ran.log").read_text().splitlines()
    assert len(ran) == 3, ran
    assert ran[0].startswith("python -m pip --disable-pip-version-check -q download --no-deps ")
    assert "dashscope==" in ran[0]
    assert ran[1].startswith("python scripts/lib/extract_wheel_file.py ")
    assert ran[1].endswith(f"dashscope/resources/qwen.tiktoken {stub_venv}/share/qwen.tiktoken")
    assert ran[2] == "python -m pytest -p no:cacheprovider -q tests/unit"
