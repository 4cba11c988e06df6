"""What only the SQLite store has: its file, WAL mode, and what the factory picks by default.
(Everything both backends share is in test_store.py, run on both.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from qwen_server.config import load_settings
from qwen_server.errors import ConfigError
from qwen_server.store.factory import create_store
from qwen_server.store.sqlite import SessionStore
from tests.store_backends import REPO_ROOT


def test_open_creates_the_file_and_its_folders_in_wal_mode(tmp_path: Path):
    path = tmp_path / "nested" / "dir" / "sessions.sqlite3"
    s = SessionStore(path)
    s.open()
    try:
        assert path.is_file()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        assert s.describe() == f"SQLite {path}"
    finally:
        s.close()


def test_unusable_path_is_a_config_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="store.path"):
        SessionStore(blocker / "sessions.sqlite3").open()


def test_the_factory_picks_sqlite_without_a_url(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("QWEN_STORE__URL", raising=False)
    settings = load_settings(
        REPO_ROOT / "config.yaml", store={"path": str(tmp_path / "s.sqlite3"), "reserve_mb": 0}
    )
    store = create_store(settings)
    assert isinstance(store, SessionStore)
    assert store.path == tmp_path / "s.sqlite3"
