"""The SQLite session store: schema migrations, upserts, ordering, paging, restart, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from qwen_server.errors import ConfigError, InvalidInput, NotFound
from qwen_server.store import migrations
from qwen_server.store.sqlite import SessionStore

REPO_ROOT = Path(__file__).resolve().parents[2]


def result(shot_id: int, start: float | None = None, caption: str | None = None) -> dict[str, Any]:
    """A stored result shaped like ShotResult.model_dump()."""
    start = float(shot_id) * 2.0 if start is None else start
    scores = {
        "suspense": 0.1,
        "darkness": 0.2,
        "ambiguity": 0.3,
        "emotional_tension": 0.4,
        "intensity": 0.5,
        "motion": 0.6,
    }
    return {
        "shot_id": shot_id,
        "caption": caption or f"shot {shot_id} caption",
        "attributes": scores,
        "model_attributes": scores,
        "audio_class": "music",
        "measured": {},
        "start_time": start,
        "end_time": start + 2.0,
        "duration": 2.0,
        "model": "tiny",
        "timings_ms": {},
    }


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "sessions.sqlite3"


@pytest.fixture
def store(db_path: Path):
    s = SessionStore(db_path)
    s.open()
    yield s
    s.close()


# --- schema ----------------------------------------------------------------------------------


def test_open_creates_file_and_migrates_empty_db_to_current_version(db_path: Path):
    s = SessionStore(db_path)
    s.open()
    try:
        assert db_path.is_file()
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.schema_version() == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "shots", "jobs"} <= tables
        conn.close()
        assert s.ping()
    finally:
        s.close()
    assert not s.ping()


def test_reopen_is_idempotent_and_open_twice_is_harmless(db_path: Path):
    s = SessionStore(db_path)
    s.open()
    s.open()
    s.save_results("film-1", [result(1)], title="T", model="m")
    s.close()
    for _ in range(2):
        s = SessionStore(db_path)
        s.open()
        assert s.get_session("film-1").shot_count == 1
        s.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_migrations_run_in_order_from_an_older_version(db_path: Path, monkeypatch):
    # A database at the current version with data, then the code gains one more migration.
    s = SessionStore(db_path)
    s.open()
    s.save_results("film-1", [result(1)], title=None, model="m")
    s.close()

    applied: list[int] = []

    def v2(conn: sqlite3.Connection) -> None:
        applied.append(2)
        conn.execute("ALTER TABLE sessions ADD COLUMN notes TEXT")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, v2])
    s = SessionStore(db_path)
    s.open()
    s.close()
    s.open()  # already at the new version: nothing runs again
    assert s.get_session("film-1").shot_count == 1
    s.close()
    assert applied == [2]
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert "notes" in {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    conn.close()


def test_failed_migration_leaves_the_previous_version_intact(db_path: Path, monkeypatch):
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("simulated failure")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, broken])
    with pytest.raises(ConfigError, match="store.path"):
        SessionStore(db_path).open()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables
    conn.close()


def test_newer_schema_is_refused(db_path: Path):
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this server supports"):
        SessionStore(db_path).open()


def test_unusable_path_is_a_config_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="store.path"):
        SessionStore(blocker / "sessions.sqlite3").open()


# --- saving and reading ----------------------------------------------------------------------


def test_save_and_get_in_time_order_with_whole_result_json(store: SessionStore):
    store.save_results(
        "film-1",
        [result(3, start=1.0), result(1, start=5.0), result(2, start=1.0)],
        title="The Film",
        model="qwen-tiny",
    )
    d = store.get_session("film-1")
    assert [s["shot_id"] for s in d.shots] == [2, 3, 1]  # start_time, then shot_id
    assert d.shot_count == 3 and d.title == "The Film" and d.model == "qwen-tiny"
    assert d.shots[0] == result(2, start=1.0)  # stored as given, every field
    assert d.created_at <= d.updated_at and d.created_at.endswith("Z")


def test_shots_without_start_time_come_last(store: SessionStore):
    untimed = result(1)
    untimed["start_time"] = None
    store.save_results("film-1", [untimed, result(5, start=3.0)], title=None, model="m")
    assert [s["shot_id"] for s in store.get_session("film-1").shots] == [5, 1]


def test_reanalysing_a_shot_replaces_it_and_updates_the_session(store: SessionStore):
    store.save_results("film-1", [result(1), result(2)], title="Old", model="m1")
    first = store.get_session("film-1")
    store.save_results(
        "film-1", [result(2, caption="new caption"), result(3)], title=None, model="m2"
    )
    d = store.get_session("film-1")
    assert d.shot_count == 3
    assert [s["shot_id"] for s in d.shots] == [1, 2, 3]
    assert d.shots[1]["caption"] == "new caption"
    assert d.title == "Old"  # None keeps the stored title
    assert d.model == "m2"
    assert d.created_at == first.created_at and d.updated_at >= first.updated_at


def test_a_bad_batch_stores_nothing(store: SessionStore):
    store.save_results("film-1", [result(1)], title=None, model="m")
    bad = result(2)
    bad["attributes"] = {"suspense": float("nan")}
    with pytest.raises(InvalidInput, match="shot 2"):
        store.save_results("film-1", [result(7), bad], title=None, model="m")
    with pytest.raises(InvalidInput, match="shot_id"):
        store.save_results("film-1", [{"caption": "no id"}], title=None, model="m")
    assert [s["shot_id"] for s in store.get_session("film-1").shots] == [1]


def test_list_sessions_pages_most_recent_first(store: SessionStore):
    for i in range(5):
        store.save_results(f"film-{i}", [result(1)], title=f"Film {i}", model="m")
    items, total = store.list_sessions(limit=2, offset=0)
    assert total == 5
    assert [s.session_id for s in items] == ["film-4", "film-3"]
    items, _ = store.list_sessions(limit=2, offset=4)
    assert [s.session_id for s in items] == ["film-0"]
    items, total = store.list_sessions(limit=50, offset=10)
    assert items == [] and total == 5
    # Updating a session moves it to the front.
    store.save_results("film-0", [result(2)], title=None, model="m")
    items, _ = store.list_sessions(limit=1, offset=0)
    assert items[0].session_id == "film-0" and items[0].shot_count == 2


def test_delete(store: SessionStore):
    store.save_results("film-1", [result(1)], title=None, model="m")
    store.save_results("film-2", [result(1)], title=None, model="m")
    store.delete_session("film-1")
    with pytest.raises(NotFound):
        store.get_session("film-1")
    with pytest.raises(NotFound):
        store.delete_session("film-1")
    assert store.get_session("film-2").shot_count == 1
    # Re-creating a deleted id starts from zero shots.
    store.save_results("film-1", [result(9)], title=None, model="m")
    assert [s["shot_id"] for s in store.get_session("film-1").shots] == [9]


def test_unknown_session_is_not_found(store: SessionStore):
    with pytest.raises(NotFound, match="session not found: nope"):
        store.get_session("nope")


@pytest.mark.parametrize(
    "bad",
    ["", "-leading-dash", ".hidden", "a/b", "a b", "x" * 129, "ünïcode", "a;drop", "..", "\n"],
)
def test_bad_ids_are_refused_everywhere(store: SessionStore, bad: str):
    for call in (
        lambda: store.save_results(bad, [result(1)], title=None, model="m"),
        lambda: store.get_session(bad),
        lambda: store.delete_session(bad),
    ):
        with pytest.raises(InvalidInput, match="invalid session_id"):
            call()


def test_longest_valid_id_is_accepted(store: SessionStore):
    sid = "A" + "b.-_9" * 25 + "xy"
    assert len(sid) == 128
    store.save_results(sid, [result(1)], title=None, model="m")
    assert store.get_session(sid).session_id == sid


# --- durability and concurrency --------------------------------------------------------------


def test_results_survive_close_and_reopen(db_path: Path):
    s = SessionStore(db_path)
    s.open()
    s.save_results("film-1", [result(i) for i in range(10)], title="T", model="m")
    before = s.get_session("film-1")
    s.close()
    s2 = SessionStore(db_path)
    s2.open()
    try:
        assert s2.get_session("film-1") == before
    finally:
        s2.close()


def test_a_killed_writer_loses_nothing_committed(db_path: Path):
    # A separate process commits one batch, then dies (SIGKILL) in the middle of a second
    # transaction. The committed batch must be intact and the half-written one absent.
    script = textwrap.dedent(
        f"""
        import os, sys, signal
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from qwen_server.store.sqlite import SessionStore
        s = SessionStore(Path({str(db_path)!r}))
        s.open()
        s.save_results("film-1", [{{"shot_id": i, "start_time": float(i)}} for i in range(5)],
                       title="T", model="m")
        conn = s._conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM shots")
        conn.execute("INSERT INTO sessions (id, model, created_at, updated_at) "
                     "VALUES ('film-2', 'm', 'x', 'x')")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    s = SessionStore(db_path)
    s.open()
    try:
        assert [x["shot_id"] for x in s.get_session("film-1").shots] == [0, 1, 2, 3, 4]
        with pytest.raises(NotFound):
            s.get_session("film-2")
    finally:
        s.close()


def test_concurrent_writers_to_one_session_lose_and_duplicate_nothing(store: SessionStore):
    # 8 threads, each writing 10 batches of 5 shots into one session; batches overlap so that
    # every shot id is written by two threads (a re-analysis racing another batch).
    threads = 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for b in range(10):
                base = ((t // 2) * 10 + b) * 5  # threads 2k and 2k+1 write the same ids
                store.save_results(
                    "film-1",
                    [result(base + i, caption=f"t{t}") for i in range(5)],
                    title=None,
                    model=f"m{t}",
                )
                store.get_session("film-1")  # readers interleave with writers
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    d = store.get_session("film-1")
    ids = [s["shot_id"] for s in d.shots]
    assert ids == list(range(threads // 2 * 10 * 5))  # every shot once, in time order
    assert d.shot_count == len(ids)
    # Each shot holds one writer's complete result, never a mix.
    assert all(s == result(s["shot_id"], caption=s["caption"]) for s in d.shots)
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT COUNT(*) FROM shots").fetchone()[0] == len(ids)
    conn.close()


def test_two_stores_on_one_file_see_each_other(db_path: Path):
    # Two server processes sharing one file behave like two SessionStores here.
    a, b = SessionStore(db_path), SessionStore(db_path)
    a.open()
    b.open()
    try:
        a.save_results("film-1", [result(1)], title=None, model="m")
        b.save_results("film-1", [result(2)], title=None, model="m")
        assert a.get_session("film-1").shot_count == 2
        assert b.list_sessions(limit=10, offset=0)[1] == 1
    finally:
        a.close()
        b.close()
