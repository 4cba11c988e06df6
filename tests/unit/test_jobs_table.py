"""The ``jobs`` table on both backends (``store.jobs_table()``: SQLite's ``JobsTable``,
PostgreSQL's ``PgJobsTable``): the same rows in and out, updates, paging, resume order."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from qwen_server.store.faults import StoreError
from qwen_server.store.jobs_table import JobRow
from tests.store_backends import StoreBackend


def job(n: int, state: str = "queued") -> JobRow:
    return JobRow(
        job_id=f"job-{n:03d}",
        state=state,
        source_kind="path",
        source_name=f"film{n}.mp4",
        source_path=f"/media/film{n}.mp4",
        session_id=f"film-{n}",
        title=f"Film {n}" if n % 2 else None,
        options={"batch_size": 8, "attributes": ["suspense", "motion"]},
        progress={},
        error=None,
        created_at=f"2026-12-01T21:{n % 60:02d}:00.123Z",
        started_at=None,
        finished_at=None,
    )


@pytest.fixture
def table(store_backend: StoreBackend):
    store = store_backend.make_store()
    store.open()
    yield store.jobs_table()
    store.close()


def test_a_job_reads_back_as_stored(table):
    row = job(1)
    table.insert(row)
    assert table.get("job-001") == row
    assert table.get("job-404") is None


def test_updates_change_only_the_named_columns(table):
    table.insert(job(1))
    table.update("job-001", state="decoding", started_at="2026-12-01T21:05:00.000Z")
    table.update("job-001", progress={"shots_done": 12, "fraction": 0.25})
    table.update("job-001", state="failed", error="decode failed: truncated file")
    got = table.get("job-001")
    assert got == replace(
        job(1),
        state="failed",
        started_at="2026-12-01T21:05:00.000Z",
        progress={"shots_done": 12, "fraction": 0.25},
        error="decode failed: truncated file",
    )
    with pytest.raises(ValueError, match="not a job column"):
        table.update("job-001", source_path="/etc/passwd")


def test_pages_are_newest_first_and_active_jobs_oldest_first(table):
    states = ["done", "queued", "analysing", "cancelled", "decoding", "failed"]
    for n, state in enumerate(states):
        table.insert(job(n, state))
    rows, total = table.page(limit=4, offset=0)
    assert total == 6
    assert [r.job_id for r in rows] == ["job-005", "job-004", "job-003", "job-002"]
    rows, _ = table.page(limit=4, offset=4)
    assert [r.job_id for r in rows] == ["job-001", "job-000"]
    assert [r.job_id for r in table.active()] == ["job-001", "job-002", "job-004"]


def test_a_duplicate_job_id_is_a_store_error(table):
    table.insert(job(1))
    with pytest.raises(StoreError, match="creating a job failed"):
        table.insert(job(1))


def test_concurrent_inserts_all_land_once(table):
    threads, per_thread = 6, 10
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def insert(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                table.insert(job(t * per_thread + i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=insert, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    rows, total = table.page(limit=100, offset=0)
    assert total == threads * per_thread
    assert sorted(r.job_id for r in rows) == [f"job-{n:03d}" for n in range(total)]


# --- leases: which node runs a job (schema step 3) ------------------------------------------


def test_claims_take_the_oldest_free_job_once(table):
    table.insert(job(1))
    table.insert(job(2))
    table.insert(job(3, "done"))
    first = table.claim("node-a", 30)
    second = table.claim("node-b", 30)
    assert (first.job_id, first.owner) == ("job-001", "node-a")
    assert (second.job_id, second.owner) == ("job-002", "node-b")
    assert table.claim("node-c", 30) is None  # both leased, the third finished
    assert table.claim("node-a", 30) is None  # not even its owner takes a job twice
    assert [r.owner for r in table.active()] == ["node-a", "node-b"]


def test_an_expired_lease_is_claimed_by_another_node(table):
    table.insert(job(1))
    assert table.claim("node-a", 0.01).job_id == "job-001"
    table.update("job-001", owner="node-a", state="analysing")
    deadline = time.monotonic() + 30
    taken = None
    while taken is None and time.monotonic() < deadline:  # the lease runs out
        taken = table.claim("node-b", 30)
    assert taken is not None and taken.owner == "node-b" and taken.state == "analysing"
    # The old owner's heartbeat and writes now fail: it must stop.
    assert table.renew("job-001", "node-a", 30, progress={"shots_analysed": 9}) is None
    assert table.update("job-001", owner="node-a", state="done") is False
    assert table.renew("job-001", "node-b", 30, progress={"shots_analysed": 3}) is False
    assert table.get("job-001").progress == {"shots_analysed": 3}


def test_release_frees_a_job_at_once(table):
    table.insert(job(1))
    table.claim("node-a", 300)
    table.release("job-001", "node-b")  # not the owner: nothing happens
    assert table.claim("node-b", 300) is None
    table.release("job-001", "node-a")
    assert table.claim("node-b", 300).owner == "node-b"


def test_cancel_requests_reach_the_owner_or_cancel_a_free_job(table):
    table.insert(job(1))
    table.insert(job(2))
    table.claim("node-a", 300)  # job-001 runs on node-a
    row = table.request_cancel("job-001", "2026-12-01T22:00:00.000Z")
    assert row.state == "queued" and row.cancel_requested and row.finished_at is None
    assert table.renew("job-001", "node-a", 300) is True  # the owner's heartbeat sees it
    # Nobody runs job-002: cancelled here and now, never claimed after.
    row = table.request_cancel("job-002", "2026-12-01T22:00:00.000Z")
    assert row.state == "cancelled" and row.finished_at == "2026-12-01T22:00:00.000Z"
    assert table.claim("node-b", 300) is None
    assert table.request_cancel("job-404", "2026-12-01T22:00:00.000Z") is None
    # A finished job is left as it is.
    table.update("job-001", owner="node-a", state="done")
    assert table.request_cancel("job-001", "2026-12-01T23:00:00.000Z").state == "done"


def test_concurrent_claimers_never_take_one_job_twice(table):
    jobs_n, claimers = 12, 4
    for n in range(jobs_n):
        table.insert(job(n))
    taken: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(claimers)

    def claim(node: str) -> None:
        barrier.wait()
        while (row := table.claim(node, 300)) is not None:
            with lock:
                taken.append(row.job_id)

    workers = [threading.Thread(target=claim, args=(f"node-{i}",)) for i in range(claimers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(taken) == [f"job-{n:03d}" for n in range(jobs_n)]
