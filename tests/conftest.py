"""Shared fixtures: the tiny real checkpoint, real servers on loopback, real media, log hygiene."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = REPO_ROOT.parent / "shared" / "media"
TEST_API_KEY = "test-key-Vb3qZ9"  # a test-only key; real keys never live in the repo


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_unexpected_error_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    """Fail a test whose code logged an ERROR it did not expect (mark ``allow_error_logs``)."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("allow_error_logs"):
        return
    bad = [
        r
        for r in caplog.get_records("call")
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("qwen_server", "client")
    ]
    if bad:
        lines = "\n".join(f"{r.name}: {r.getMessage()}" for r in bad[:5])
        pytest.fail(f"unexpected error logs:\n{lines}")


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The real film excerpts and recordings beside the checkout (``../shared/media``)."""
    if not (SHARED_MEDIA / "cuts.json").is_file():
        pytest.skip(f"real media not found at {SHARED_MEDIA}")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2-VL checkpoint built by the real script, loaded like the 2B."""
    out = tmp_path_factory.mktemp("tiny-qwen2-vl")
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "make_tiny_model.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_settings(model_dir: Path, tmp_path: Path, **overrides: Any):
    """Settings from the repo's config.yaml pointed at the tiny model and a temp store."""
    from qwen_server.config import load_settings

    sections: dict[str, dict[str, Any]] = {
        "model": {"path": str(model_dir), "device": "cpu"},
        "store": {"path": str(tmp_path / "sessions.sqlite3")},
        "batching": {"max_wait_ms": 5},
    }
    top: dict[str, Any] = {"server_api_keys": TEST_API_KEY}
    for key, value in overrides.items():
        if isinstance(value, dict):
            sections.setdefault(key, {}).update(value)
        else:
            top[key] = value
    return load_settings(REPO_ROOT / "config.yaml", **sections, **top)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test despite the name


@dataclass
class LiveServer:
    """A real uvicorn server on 127.0.0.1 running ``create_app`` in a background thread."""

    url: str
    app: Any
    api_key: str = TEST_API_KEY

    def client(self, key: str | None = TEST_API_KEY, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120.0, **kw)


@contextmanager
def run_server(
    settings: Any, *, wait_ready: bool = True, http: str = "auto", **app_kw: Any
) -> Iterator[LiveServer]:
    """Start the real app on a free loopback port, with the CLI's uvicorn config; stop on exit.

    ``http`` picks the HTTP parser ("auto", "h11" or "httptools"), as ``uvicorn_config`` does.
    """
    import uvicorn

    from qwen_server.http.app import create_app
    from qwen_server.http.serving import uvicorn_config

    app = create_app(settings, **app_kw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, settings, http=http, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            try:
                r = httpx.get(url + "/health", timeout=2)
                if r.status_code == 200 or (not wait_ready and r.status_code == 503):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not become ready in time")
        yield LiveServer(url=url, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One shared real server on the tiny checkpoint with the repo's default limits."""
    with run_server(test_settings(tiny_model_dir, tmp_path_factory.mktemp("srv"))) as live:
        yield live


@pytest.fixture
def server_factory(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Any]:
    """Start a real server with settings overrides: ``with server_factory(server={...}) as s:``."""

    def factory(**overrides: Any):
        return run_server(test_settings(tiny_model_dir, tmp_path, **overrides))

    return factory


# --- session stores: SQLite and a real PostgreSQL server -------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server from Debian's binaries on 127.0.0.1 (tests/postgres_server.py),
    started once per test run and stopped after. Skipped only when no binaries are installed;
    a server that is installed but does not start fails the tests that need it."""
    from tests.postgres_server import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb/pg_ctl/postgres under /usr/lib/postgresql/"
            "*/bin or on PATH; scripts/test.sh installs Debian's postgresql package)"
        )
    server = PostgresServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


def new_database(postgres: Any, prefix: str = "t") -> str:
    """A fresh, uniquely named database on the test server; returns its name."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    return name


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store test once on a SQLite file and once on a PostgreSQL database of its own."""
    from tests.store_backends import PostgresBackend, SqliteBackend

    if request.param == "sqlite":
        yield SqliteBackend(tmp_path / "nested" / "dir" / "sessions.sqlite3")
        return
    server = request.getfixturevalue("postgres")
    name = new_database(server)
    try:
        yield PostgresBackend(server, server.url(name))
    finally:
        server.drop_database(name)
