"""What only the PostgreSQL store has, on the real test server (tests/postgres_server.py):
servers starting together migrate once (advisory lock), the password never shows, waits are
bounded, failures are ``StoreError`` (503 / ``stored: false``) and the store recovers, and two
app servers on one database share their sessions."""

from __future__ import annotations

import logging
import multiprocessing
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from qwen_server.config import load_settings
from qwen_server.errors import ConfigError, NotFound
from qwen_server.store.factory import create_store
from qwen_server.store.faults import StoreError
from qwen_server.store.postgres import PostgresSessionStore, pg_reason
from tests.conftest import new_database, run_server, test_settings
from tests.payloads import shot
from tests.postgres_server import SUPERUSER, PostgresServer
from tests.store_backends import REPO_ROOT, PostgresBackend


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[PostgresBackend]:
    name = new_database(postgres, "pg")
    try:
        yield PostgresBackend(postgres, postgres.url(name))
    finally:
        postgres.drop_database(name)


def _admin(db: PostgresBackend) -> psycopg.Connection:
    return psycopg.connect(db.url, password=db.server.password, autocommit=True)


def results(ids: range, caption: str = "c") -> list[dict[str, Any]]:
    return [{"shot_id": i, "start_time": float(i), "caption": caption} for i in ids]


# --- start-up: migrations and connection settings --------------------------------------------


def _migrate_worker(url: str, password: str, barrier: Any, out: Any) -> None:
    """One starting server (a process of its own): open the store at the barrier and report
    which migration steps this process ran."""
    from qwen_server.store import pg_migrations

    ran: list[str] = []

    def counted(step: Any) -> Any:
        def run(conn: Any) -> None:
            ran.append(step.__name__)
            step(conn)

        return run

    pg_migrations.PG_MIGRATIONS = [counted(s) for s in pg_migrations.PG_MIGRATIONS]
    store = PostgresSessionStore(url, password=password)
    barrier.wait()
    try:
        store.open()
        store.close()
        out.put(("ok", ran))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", repr(exc)))


def test_servers_starting_together_migrate_once(db: PostgresBackend):
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_worker, args=(db.url, db.server.password, barrier, out))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    assert all(kind == "ok" for kind, _ in reports), reports
    # Each step ran exactly once over all four processes; the others found it done.
    assert sorted(step for _, ran in reports for step in ran) == [
        "_v1_sessions",
        "_v2_jobs",
        "_v3_job_leases",
    ]
    assert db.version() == 3


def test_a_wrong_password_is_a_config_error_that_does_not_show_it(db: PostgresBackend, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-" + db.server.password[:6]
    with pytest.raises(ConfigError) as err:
        PostgresSessionStore(db.url, password=wrong, timeout_s=5).open()
    message = err.value.message
    assert message.startswith("store.url: cannot open the session database postgresql://")
    assert 'password authentication failed for user "qwen_test"' in message
    assert wrong not in message and wrong not in caplog.text


def test_an_unreachable_server_is_a_config_error_naming_store_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/nowhere"
    with pytest.raises(ConfigError, match="store.url: cannot open") as err:
        PostgresSessionStore(url, password="x", timeout_s=2).open()
    assert "Connection refused" in err.value.message


def test_the_url_from_the_environment_may_carry_the_password(
    db: PostgresBackend, monkeypatch, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG)
    secret = db.server.password
    with_password = db.url.replace(f"{SUPERUSER}@", f"{SUPERUSER}:{secret}@")
    monkeypatch.setenv("QWEN_STORE__URL", with_password)
    settings = load_settings(REPO_ROOT / "config.yaml", store={"path": str(tmp_path / "x")})
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    store = create_store(settings)
    assert isinstance(store, PostgresSessionStore)
    store.open()
    try:
        store.save_results("film-1", results(range(3)), title=None, model="m")
        assert store.get_session("film-1").shot_count == 3
        assert store.describe() == f"PostgreSQL {db.url.replace(SUPERUSER, SUPERUSER + ':***')}"
    finally:
        store.close()
    assert secret not in caplog.text
    assert "session store open: PostgreSQL postgresql://qwen_test:***@" in caplog.text


def test_reasons_name_no_host_socket_or_password():
    exc = psycopg.OperationalError(
        'connection failed: connection to server at "10.1.2.3", port 5432 failed: FATAL: '
        'password "hunter2" ... on socket "/run/pg/.s.PGSQL.5432"'
    )
    reason = pg_reason(exc, secret="hunter2")
    assert "10.1.2.3" not in reason and "/run/pg" not in reason and "hunter2" not in reason
    assert reason.startswith("connection failed: connection to the database server failed")


# --- failures while serving, and recovery ----------------------------------------------------


def test_a_held_row_lock_fails_the_write_after_timeout_s(db: PostgresBackend):
    store = db.make_store(timeout_s=1)
    store.open()
    try:
        store.save_results("film-1", results(range(2)), title=None, model="m")
        with _admin(db) as other, other.transaction():
            other.execute("SELECT 1 FROM sessions WHERE id = 'film-1' FOR UPDATE")
            with pytest.raises(StoreError, match=r"lock timeout \(SQLSTATE 55P03\)") as err:
                store.save_results("film-1", results(range(2, 5)), title=None, model="m")
            assert err.value.status_code == 503
            assert store.health().startswith("error: last write failed (canceling statement")
        store.save_results("film-1", results(range(2, 5)), title=None, model="m")
        assert store.get_session("film-1").shot_count == 5 and store.health() == "ok"
    finally:
        store.close()


def test_a_write_that_fails_stores_nothing_and_the_store_recovers(db: PostgresBackend):
    store = db.make_store()
    store.open()
    try:
        store.save_results("film-1", results(range(3)), title=None, model="m")
        with _admin(db) as admin:
            admin.execute("ALTER TABLE shots ADD CONSTRAINT below_ten CHECK (shot_id < 10)")
            # Shots 8 and 9 are fine; 10 fails the batch, so none of the three is stored.
            with pytest.raises(StoreError, match=r"below_ten.*SQLSTATE 23514"):
                store.save_results("film-1", results(range(8, 11)), title=None, model="m")
            assert store.get_session("film-1").shot_count == 3
            assert "below_ten" in store.health()
            admin.execute("ALTER TABLE shots DROP CONSTRAINT below_ten")
        store.save_results("film-1", results(range(8, 11)), title=None, model="m")
        assert store.get_session("film-1").shot_count == 6 and store.health() == "ok"
    finally:
        store.close()


def test_connections_cut_by_the_server_cost_no_failed_request(db: PostgresBackend):
    store = db.make_store()
    store.open()
    try:
        store.save_results("film-1", results(range(3)), title=None, model="m")
        with _admin(db) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'qwen-server'"
            ).fetchall()
        assert cut and all(row[0] for row in cut)
        # The pool checks a connection before lending it: the dead ones are replaced.
        store.save_results("film-1", results(range(3, 6)), title=None, model="m")
        assert store.get_session("film-1").shot_count == 6 and store.health() == "ok"
    finally:
        store.close()


def test_a_database_refusing_connections_is_a_store_error_not_a_hang(db: PostgresBackend):
    store = db.make_store(timeout_s=2)
    store.open()
    name = db.url.rsplit("/", 1)[1]
    try:
        with db.server.admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        with pytest.raises(StoreError, match="storing 1 results failed"):
            store.save_results("film-1", results(range(1)), title=None, model="m")
        with pytest.raises(StoreError, match="reading session failed"):
            store.get_session("film-1")
        assert store.health().startswith("error: ")
    finally:
        with db.server.admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        store.close()


# --- the app: failures over HTTP, and two servers sharing one database ------------------------


def test_store_failures_through_the_app_keep_the_results(tiny_model_dir, tmp_path, db):
    settings = test_settings(tiny_model_dir, tmp_path, **db.settings())
    with run_server(settings) as live, live.client() as c, _admin(db) as admin:
        r = c.post("/analyze_batch", json={"session_id": "f", "shots": [shot(1)]})
        assert r.json()["stored"] is True
        admin.execute("ALTER TABLE sessions RENAME TO sessions_away")
        try:
            r = c.post("/analyze_batch", json={"session_id": "f", "shots": [shot(2)]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["stored"] is False and [x["shot_id"] for x in body["results"]] == [2]
            assert 'relation "sessions" does not exist' in body["store_error"]
            r = c.delete("/sessions/f")
            assert r.status_code == 503 and r.headers["retry-after"] == "30"
            health = c.get("/health").json()["store"]
            assert health == 'error: relation "sessions" does not exist (SQLSTATE 42P01)'
            assert db.server.password not in r.text + health
        finally:
            admin.execute("ALTER TABLE sessions_away RENAME TO sessions")
        r = c.post("/analyze_batch", json={"session_id": "f", "shots": [shot(2)]})
        assert r.json()["stored"] is True
        assert c.get("/sessions/f").json()["shot_count"] == 2
        assert c.get("/health").json()["store"] == "ok"


def test_two_servers_on_one_database_share_sessions(tiny_model_dir, tmp_path, db):
    settings = [
        test_settings(tiny_model_dir, tmp_path / name, **db.settings()) for name in ("a", "b")
    ]
    with run_server(settings[0]) as a, run_server(settings[1]) as b:
        clients = [a.client(), b.client()]
        try:

            def post(k: int) -> int:
                body = {"session_id": "shared", "shots": [shot(2 * k, 1), shot(2 * k + 1, 1)]}
                r = clients[k % 2].post("/analyze_batch", json=body)
                return r.status_code if r.json().get("stored") is not False else -1

            with ThreadPoolExecutor(6) as pool:
                assert list(pool.map(post, range(6))) == [200] * 6
            for c in clients:
                body = c.get("/sessions/shared").json()
                assert [s["shot_id"] for s in body["shots"]] == list(range(12))
                assert body["shot_count"] == 12
            assert clients[1].delete("/sessions/shared").status_code == 204
            assert clients[0].get("/sessions/shared").status_code == 404
        finally:
            for c in clients:
                c.close()
    store = db.make_store()
    store.open()
    try:
        with pytest.raises(NotFound):
            store.get_session("shared")
    finally:
        store.close()
