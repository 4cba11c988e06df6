"""The ``jobs`` table on both backends (``store.jobs_table()``: SQLite's ``JobsTable``,
PostgreSQL's ``PgJobsTable``): the same rows in and out, updates, paging, resume order."""

from __future__ import annotations

import threading
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
