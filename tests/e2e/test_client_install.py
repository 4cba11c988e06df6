"""The two installs: the bare package is the film client alone, ``[server]`` adds the GPU server.

A CPU-only client box must not pull torch, transformers, accelerate, xgrammar, triton or the
server's pydantic/FastAPI stack (3.1 GB against 0.93 GB). The metadata test reads what the
package declares; the slow test builds a real client-only virtualenv from PyPI and runs every
``qwen-client`` command there against a loopback analysis server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.fake_analysis_server import FakeAnalysisServer, free_port
from tests.film_factory import ShotSpec, make_film

REPO = Path(__file__).resolve().parents[2]
# Distributions that only the server needs; none may be in a client install.
SERVER_ONLY = {
    "torch",
    "transformers",
    "accelerate",
    "xgrammar",
    "triton",
    "safetensors",
    "tokenizers",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "pydantic-settings",
    "openai",
    "prometheus-client",
}
TOKEN = "install-token"


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_dependency_metadata_keeps_the_server_stack_out_of_the_client() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not base & SERVER_ONLY, base & SERVER_ONLY
    assert "client" in extras and not {_name(r) for r in extras["client"]} & SERVER_ONLY
    server = {_name(r) for r in extras["server"]}
    assert {"torch", "transformers", "xgrammar", "fastapi", "pydantic"} <= server
    # The client's own libraries are in the base, so the server extra gets them too.
    assert {"av", "httpx", "scipy", "scenedetect", "opencv-python-headless"} <= base
    # Speech runs on onnxruntime, loudness on pyloudnorm; librosa is only the tests' reference.
    assert {"onnxruntime", "pyloudnorm"} <= base and "librosa" not in base
    assert "pyyaml" in base  # analyze --attributes FILE reads YAML vocabularies


def _client_venv(tmp: Path) -> Path:
    """A fresh virtualenv with ``pip install <copy of the repo>`` (the bare package) in it."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("client", "qwen_server"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    proc = subprocess.run([*pip, "install", str(src)], capture_output=True, text=True, timeout=1500)
    if proc.returncode != 0:
        text = proc.stdout + proc.stderr
        unreachable = ("Could not find a version", "ConnectionError", "Temporary failure")
        if any(marker in text for marker in unreachable):
            pytest.skip(f"the package index cannot be reached: {text.strip()[-300:]}")
        pytest.fail(f"pip install of the client failed:\n{text[-3000:]}")
    # The README's second step: silero-vad's model without the torch its metadata asks for.
    proc = subprocess.run(
        [*pip, "install", "--no-deps", "silero-vad>=5.1,<7"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


@pytest.mark.slow
def test_client_only_venv_runs_every_command(tmp_path: Path) -> None:
    venv = _client_venv(tmp_path)
    python = str(venv / "bin" / "python")
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY

    exe = str(venv / "bin" / "qwen-client")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN_", "PYTHON"))}
    env["QWEN_SERVER_TOKEN"] = TOKEN

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("qwen-client "), version
    for command in ("shots", "analyze", "health", "chat"):
        shown = run(command, "--help")
        assert shown.returncode == 0 and "usage" in shown.stdout.lower(), (command, shown.stderr)

    film = make_film(
        tmp_path / "film.mp4", [ShotSpec(frames=30, brightness=0.8), ShotSpec(frames=30)]
    )
    shots = run("shots", str(film.path), "--out", str(tmp_path / "shots"), "--quiet")
    assert shots.returncode == 0, shots.stderr
    records = [
        json.loads(line) for line in (tmp_path / "shots" / "shots.jsonl").read_text().splitlines()
    ]
    # Speech (silero-vad on onnxruntime), loudness and beats work without torch or librosa.
    assert all(r["speech_error"] is None for r in records), records
    assert all("speech_ratio" in r["audio_features"] for r in records)
    assert all("loudness_lufs" in r["audio_features"] for r in records)

    with FakeAnalysisServer(token=TOKEN) as server:
        health = run("health", "--server", server.url)
        assert health.returncode == 0 and "ok" in health.stdout, health.stderr
        out = tmp_path / "analysed"
        analyzed = run("analyze", str(film.path), "--server", server.url, "--out", str(out), "-q")
        assert analyzed.returncode == 0, analyzed.stderr
        assert server.recorded.sessions == {"film.mp4": [1, 2]}
        # A vocabulary file is read with PyYAML, which the bare install must bring.
        vocab = tmp_path / "vocab.yaml"
        vocab.write_text('attributes:\n  humor: "something funny happens"\n  darkness: "dark"\n')
        out = tmp_path / "vocab_run"
        scored = run(
            "analyze",
            str(film.path),
            "-s",
            server.url,
            "--out",
            str(out),
            "-q",
            "--attributes",
            str(vocab),
        )
        assert scored.returncode == 0, scored.stderr
        assert (out / "shots.csv").read_text().splitlines()[0].count("humor") == 1
        # chat reaches the server (the fake has no /chat: a clear one-line error, not a crash).
        asked = run("chat", "--server", server.url, "--session", "film.mp4", "what happens?")
        assert "Traceback" not in asked.stderr and "ModuleNotFoundError" not in asked.stderr
    dead = run("health", "--server", f"http://127.0.0.1:{free_port()}")
    assert dead.returncode == 3 and "Traceback" not in dead.stderr, dead.stderr

    # The server's entry point is installed too, and says what is missing instead of crashing.
    server = subprocess.run(
        [str(venv / "bin" / "qwen-server")], env=env, capture_output=True, text=True, timeout=60
    )
    assert server.returncode == 2 and "Traceback" not in server.stderr, server.stderr
    assert 'pip install ".[server]"' in server.stderr and "pydantic" in server.stderr
