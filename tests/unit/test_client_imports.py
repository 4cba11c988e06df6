"""The client installs without the server stack: importing any ``client`` module pulls in none
of torch, transformers, xgrammar, pydantic, fastapi, uvicorn or accelerate, and no server module
but the dependency-free contract modules (constants, and the attribute vocabulary format that
``analyze --attributes`` reads; its one dependency, PyYAML, is a client dependency)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import client
from client.cli import run

FORBIDDEN = ("torch", "transformers", "xgrammar", "pydantic", "fastapi", "uvicorn", "accelerate")
ALLOWED_SERVER = {
    "qwen_server",
    "qwen_server.contract",
    "qwen_server.contract.constants",
    "qwen_server.contract.vocabulary",
}


def client_modules() -> list[str]:
    """Every module under client/ (``__main__`` modules run a command, so they are left out)."""
    names = ["client"]
    for info in pkgutil.walk_packages(client.__path__, "client."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_every_client_module_is_found() -> None:
    names = client_modules()
    for expected in ("client.cli.chat", "client.media.scan", "client.pipeline.run", "client.api"):
        assert expected in names


def test_client_modules_import_no_server_stack() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {client_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    server = [m for m in loaded if m.split(".")[0] == "qwen_server" and m not in ALLOWED_SERVER]
    assert not bad, f"client imports the server stack: {bad}"
    assert not server, f"client imports server modules: {server}"


def test_version(capsys: pytest.CaptureFixture) -> None:
    from qwen_server import __version__

    with pytest.raises(SystemExit) as exc:
        run(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"qwen-client {__version__}"


def test_version_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("qwen-client "), done.stderr


def test_chat_help_has_examples_and_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["chat", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "qwen-client chat --server" in out
    assert "exit codes:" in out and "--token-file" in out
