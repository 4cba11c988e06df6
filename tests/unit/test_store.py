"""The session store, every test on both backends (``store_backend``: a SQLite file, and a
PostgreSQL database on the real test server): migrations, upserts, order, paging, concurrency.
Backend-only behaviour: test_store_sqlite.py, tests/integration/test_store_postgres.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from qwen_server.errors import ConfigError, InvalidInput, NotFound
from qwen_server.store import migrations, pg_migrations
from qwen_server.store.protocol import SessionStoreProtocol
from tests.store_backends import REPO_ROOT, StoreBackend


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
def store(store_backend: StoreBackend):
    s = store_backend.make_store()
    s.open()
    yield s
    s.close()


# --- schema ----------------------------------------------------------------------------------


def test_both_backends_have_the_same_schema_versions():
    # A step added to one backend and not the other would leave them at different versions.
    assert len(pg_migrations.PG_MIGRATIONS) == len(migrations.MIGRATIONS)
    assert pg_migrations.pg_schema_version() == migrations.schema_version() == 3


def test_open_migrates_an_empty_database_to_the_current_version(store_backend: StoreBackend):
    s = store_backend.make_store()
    assert isinstance(s, SessionStoreProtocol)
    s.open()
    try:
        assert store_backend.version() == migrations.schema_version()
        assert {"sessions", "shots", "jobs"} <= store_backend.tables()
        assert s.ping() and s.health() == "ok"
    finally:
        s.close()
    assert not s.ping()
    assert s.health() == "error: not open"


def test_reopen_is_idempotent_and_open_twice_is_harmless(store_backend: StoreBackend):
    s = store_backend.make_store()
    s.open()
    s.open()
    s.save_results("film-1", [result(1)], title="T", model="m")
    s.close()
    for _ in range(2):
        s = store_backend.make_store()
        s.open()
        assert s.get_session("film-1").shot_count == 1
        s.close()
    assert store_backend.version() == migrations.schema_version()


def test_migrations_run_in_order_from_an_older_version(store_backend: StoreBackend, monkeypatch):
    # A database at the current version with data, then the code gains one more migration.
    s = store_backend.make_store()
    s.open()
    s.save_results("film-1", [result(1)], title=None, model="m")
    s.close()

    applied: list[int] = []
    newer = migrations.schema_version() + 1

    def v_next(conn: Any) -> None:  # the same SQL works on both databases
        applied.append(newer)
        conn.execute("ALTER TABLE sessions ADD COLUMN notes TEXT")

    module, name = store_backend.migrations_attr
    monkeypatch.setattr(module, name, [*getattr(module, name), v_next])
    s = store_backend.make_store()
    s.open()
    s.close()
    s.open()  # already at the new version: nothing runs again
    assert s.get_session("film-1").shot_count == 1
    s.close()
    assert applied == [newer]
    assert store_backend.version() == newer
    assert "notes" in store_backend.columns("sessions")


def test_failed_migration_leaves_the_previous_version_intact(
    store_backend: StoreBackend, monkeypatch
):
    def broken(conn: Any) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("SELECT no_such_column FROM sessions")  # the database's own error

    s = store_backend.make_store()
    s.open()  # at the current version first
    s.close()
    current = migrations.schema_version()
    module, name = store_backend.migrations_attr
    monkeypatch.setattr(module, name, [*getattr(module, name), broken])
    with pytest.raises(ConfigError, match=store_backend.config_key):
        store_backend.make_store().open()
    assert store_backend.version() == current
    assert "half_done" not in store_backend.tables()


def test_newer_schema_is_refused(store_backend: StoreBackend):
    store_backend.set_version(99)
    with pytest.raises(ConfigError, match="newer than this server supports"):
        store_backend.make_store().open()


# --- saving and reading ----------------------------------------------------------------------


def test_save_and_get_in_time_order_with_whole_result_json(store: SessionStoreProtocol):
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
    assert list(d.shots[0]) == list(result(2, start=1.0))  # key order kept too
    assert d.created_at <= d.updated_at and d.created_at.endswith("Z")


def test_shots_without_start_time_come_last(store: SessionStoreProtocol):
    untimed = result(1)
    untimed["start_time"] = None
    store.save_results("film-1", [untimed, result(5, start=3.0)], title=None, model="m")
    assert [s["shot_id"] for s in store.get_session("film-1").shots] == [5, 1]


def test_reanalysing_a_shot_replaces_it_and_updates_the_session(store: SessionStoreProtocol):
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


def test_a_bad_batch_stores_nothing(store: SessionStoreProtocol):
    store.save_results("film-1", [result(1)], title=None, model="m")
    bad = result(2)
    bad["attributes"] = {"suspense": float("nan")}
    with pytest.raises(InvalidInput, match="shot 2"):
        store.save_results("film-1", [result(7), bad], title=None, model="m")
    with pytest.raises(InvalidInput, match="shot_id"):
        store.save_results("film-1", [{"caption": "no id"}], title=None, model="m")
    assert [s["shot_id"] for s in store.get_session("film-1").shots] == [1]


def test_list_sessions_pages_most_recent_first(store: SessionStoreProtocol):
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


def test_delete(store: SessionStoreProtocol, store_backend: StoreBackend):
    store.save_results("film-1", [result(1), result(2)], title=None, model="m")
    store.save_results("film-2", [result(1)], title=None, model="m")
    store.delete_session("film-1")
    with pytest.raises(NotFound):
        store.get_session("film-1")
    with pytest.raises(NotFound):
        store.delete_session("film-1")
    assert store.get_session("film-2").shot_count == 1
    assert store_backend.count("shots") == 1  # the deleted session's shots went with it
    # Re-creating a deleted id starts from zero shots.
    store.save_results("film-1", [result(9)], title=None, model="m")
    assert [s["shot_id"] for s in store.get_session("film-1").shots] == [9]


def test_unknown_session_is_not_found(store: SessionStoreProtocol):
    with pytest.raises(NotFound, match="session not found: nope"):
        store.get_session("nope")


@pytest.mark.parametrize(
    "bad",
    ["", "-leading-dash", ".hidden", "a/b", "a b", "x" * 129, "ünïcode", "a;drop", "..", "\n"],
)
def test_bad_ids_are_refused_everywhere(store: SessionStoreProtocol, bad: str):
    for call in (
        lambda: store.save_results(bad, [result(1)], title=None, model="m"),
        lambda: store.get_session(bad),
        lambda: store.delete_session(bad),
    ):
        with pytest.raises(InvalidInput, match="invalid session_id"):
            call()


def test_longest_valid_id_is_accepted(store: SessionStoreProtocol):
    sid = "A" + "b.-_9" * 25 + "xy"
    assert len(sid) == 128
    store.save_results(sid, [result(1)], title=None, model="m")
    assert store.get_session(sid).session_id == sid


# --- durability and concurrency --------------------------------------------------------------


def test_results_survive_close_and_reopen(store_backend: StoreBackend):
    s = store_backend.make_store()
    s.open()
    s.save_results("film-1", [result(i) for i in range(10)], title="T", model="m")
    before = s.get_session("film-1")
    s.close()
    s2 = store_backend.make_store()
    s2.open()
    try:
        assert s2.get_session("film-1") == before
    finally:
        s2.close()


def _run_child(store_backend: StoreBackend, body: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``body`` in a new Python process after the backend's store code (``s`` open)."""
    script = (
        f"import os, sys, signal\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from pathlib import Path\n" + store_backend.store_code() + textwrap.dedent(body)
    )
    env = {**os.environ, **store_backend.subprocess_env()}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, env=env)


def test_a_killed_writer_loses_nothing_committed(store_backend: StoreBackend):
    # A separate process commits one batch, then dies (SIGKILL) in the middle of a second
    # transaction. The committed batch must be intact and the half-written one absent.
    body = (
        's.save_results("film-1", [{"shot_id": i, "start_time": float(i)} for i in range(5)],'
        ' title="T", model="m")\n'
        + store_backend.begin_code()
        + textwrap.dedent(
            """
            conn.execute("DELETE FROM shots")
            conn.execute("INSERT INTO sessions (id, model, created_at, updated_at) "
                         "VALUES ('film-2', 'm', '2026-01-01', '2026-01-01')")
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    proc = _run_child(store_backend, body)
    assert proc.returncode == -9, proc.stderr.decode()
    s = store_backend.make_store()
    s.open()
    try:
        assert [x["shot_id"] for x in s.get_session("film-1").shots] == [0, 1, 2, 3, 4]
        with pytest.raises(NotFound):
            s.get_session("film-2")
    finally:
        s.close()


def test_concurrent_writers_to_one_session_lose_and_duplicate_nothing(
    store: SessionStoreProtocol, store_backend: StoreBackend
):
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
    assert store_backend.count("shots") == len(ids)


def test_concurrent_processes_writing_one_session(store_backend: StoreBackend):
    # Four server processes (each its own store) write overlapping batches of one session,
    # all starting from an empty database (so their migrations race too).
    children = 4
    body = textwrap.dedent(
        """
        k = int(sys.argv[1])
        for b in range(8):
            base = ((k // 2) * 8 + b) * 4  # processes 2j and 2j+1 write the same shot ids
            s.save_results("film-1", [{"shot_id": base + i, "start_time": float(base + i),
                                       "caption": f"p{k}"} for i in range(4)],
                           title="shared", model=f"m{k}")
        s.close()
        """
    )
    script = (
        f"import os, sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\nfrom pathlib import Path\n"
        + store_backend.store_code()
        + body
    )
    env = {**os.environ, **store_backend.subprocess_env()}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(k)], env=env, stderr=subprocess.PIPE)
        for k in range(children)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()
    s = store_backend.make_store()
    s.open()
    try:
        d = s.get_session("film-1")
    finally:
        s.close()
    expected = list(range(children // 2 * 8 * 4))
    assert [x["shot_id"] for x in d.shots] == expected
    assert d.shot_count == len(expected) == store_backend.count("shots")
    assert all(x["caption"] in {f"p{k}" for k in range(children)} for x in d.shots)


def test_two_stores_on_one_database_see_each_other(store_backend: StoreBackend):
    # Two server processes sharing one database behave like two stores here.
    a, b = store_backend.make_store(), store_backend.make_store()
    a.open()
    b.open()
    try:
        a.save_results("film-1", [result(1)], title=None, model="m")
        b.save_results("film-1", [result(2)], title=None, model="m")
        assert a.get_session("film-1").shot_count == 2
        assert b.list_sessions(limit=10, offset=0)[1] == 1
        b.delete_session("film-1")
        with pytest.raises(NotFound):
            a.get_session("film-1")
    finally:
        a.close()
        b.close()
