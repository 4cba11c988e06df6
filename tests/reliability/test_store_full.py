"""Disk-full drill: a store that cannot write never loses finished work, and says so.

Issue 8 found that with the store on a full disk every ``/analyze_batch`` with a ``session_id``
answered a generic 500 *after* the analysis ran (the results were lost) and ``DELETE`` was 500
too. Here the store is filled for real, two ways:

* ``store.max_size_mb`` (``PRAGMA max_page_count``): SQLite's own "database or disk is full",
  the same error as a full disk, with no privileges needed: the HTTP drill runs on it in CI.
* a real full filesystem: a 4 MB tmpfs mounted in an unprivileged user namespace
  (``unshare -r -m``), where even a delete needs disk space; skipped where the kernel does not
  allow such namespaces.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from qwen_server.store.faults import StoreError
from qwen_server.store.sqlite import SessionStore
from tests.conftest import REPO_ROOT
from tests.payloads import shot


def _result(shot_id: int) -> dict:
    return {"shot_id": shot_id, "caption": "c" * 400, "start_time": float(shot_id), "x": "y" * 800}


def _fill(store: SessionStore, session: str, *, limit: int = 10_000) -> StoreError:
    """Store batches until the store is full; return the error that said so."""
    for i in range(limit):
        try:
            store.save_results(
                session, [_result(i * 4 + k) for k in range(4)], title=None, model="m"
            )
        except StoreError as exc:
            return exc
    raise AssertionError(f"store not full after {limit} batches")


def _store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "qwen_server.store" and r.levelno == logging.WARNING
    ]


# --- the store itself, capped by max_size_mb -------------------------------------------------


def test_capped_store_fails_cleanly_logs_once_and_deletes_at_the_cap(tmp_path, caplog) -> None:
    store = SessionStore(tmp_path / "s.sqlite3", max_size_mb=0.1, reserve_mb=0)
    store.open()
    try:
        store.save_results("keep", [_result(1)], title="T", model="m")
        error = _fill(store, "big")
        assert error.status_code == 503
        assert "database or disk is full" in error.message
        assert str(tmp_path) not in error.message  # a reason, never a path
        for _ in range(3):  # a run of failures is logged once
            with pytest.raises(StoreError):
                store.save_results(
                    "big", [_result(90_000 + k) for k in range(4)], title=None, model="m"
                )
        assert len([w for w in _store_warnings(caplog) if "failed" in w]) == 1
        assert store.health().startswith("error: last write failed (database or disk is full")
        assert store.ping()  # reads still work

        store.delete_session("big")  # at the cap: deleting needs no new pages
        assert store.health() == "ok"
        store.save_results("keep", [_result(2)], title=None, model="m")
        assert store.get_session("keep").shot_count == 2
    finally:
        store.close()


# --- a really full filesystem ----------------------------------------------------------------

_TMPFS_DRILL = textwrap.dedent(
    """
    import errno, json, os, subprocess, sys
    from pathlib import Path
    from qwen_server.store.faults import StoreError
    from qwen_server.store.sqlite import SessionStore

    def drill(mnt, reserve_mb):
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "none", str(mnt)], check=True)
        out = {}
        store = SessionStore(mnt / "s.sqlite3", reserve_mb=reserve_mb)
        store.open()
        out["spare_at_open"] = store._spare.present()
        store.save_results("keep", [{"shot_id": 1, "caption": "k"}], title=None, model="m")
        for i in range(20):
            rows = [{"shot_id": i * 8 + k, "caption": "c" * 500, "pad": "p" * 1500}
                    for k in range(8)]
            store.save_results("big", rows, title=None, model="m")
        store._checkpoint()  # the log is empty: any write must grow a file
        filler = mnt / "other-data"  # then something else fills the disk to the last byte
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(bytes(4096))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        st = os.statvfs(mnt)
        out["free_bytes_when_full"] = st.f_bavail * st.f_frsize
        try:
            store.save_results("keep", [{"shot_id": 9, "caption": "x" * 9000}], title=None,
                               model="m")
            out["save"] = "ok"
        except StoreError as exc:
            out["save"] = "error: " + exc.message
        out["health_when_full"] = store.health()
        try:
            store.delete_session("big")
            out["delete"] = "ok"
        except StoreError as exc:
            out["delete"] = "error: " + exc.message
        out["spare_after_delete"] = store._spare.present()
        out["keep_after_delete"] = store.get_session("keep").shot_count
        filler.unlink()  # the operator frees space on the disk
        store.save_results("keep", [{"shot_id": 2, "caption": "k"}], title=None, model="m")
        out["spare_after_room"] = store._spare.present()
        out["health_after_room"] = store.health()
        store.close()
        return out

    root = Path(sys.argv[1])
    print(json.dumps({"spare": drill(root / "a", 0.5), "none": drill(root / "b", 0)}))
    """
)


def _user_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(
            ["unshare", "-r", "-m", "true"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _user_namespaces_work(), reason="unprivileged user namespaces disabled")
def test_real_full_disk_delete_works_by_giving_up_the_spare(tmp_path: Path) -> None:
    script = tmp_path / "drill.py"
    script.write_text(_TMPFS_DRILL)
    proc = subprocess.run(
        ["unshare", "-r", "-m", sys.executable, str(script), str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    spare, none = runs["spare"], runs["none"]
    for out in (spare, none):
        assert out["free_bytes_when_full"] < 16 * 1024  # the disk really is full
        assert "database or disk is full" in out["save"]
        assert out["health_when_full"].startswith("error: last write failed")
        assert out["keep_after_delete"] == 1  # nothing lost either way
    # Without a spare, even a delete cannot get the log space it needs: 503, not 500.
    assert "database or disk is full" in none["delete"]
    # With one, the spare is given up and the delete goes through ...
    assert spare["spare_at_open"] is True
    assert spare["delete"] == "ok"
    assert spare["spare_after_delete"] is False
    # ... and it is reserved again once the disk has room.
    assert spare["spare_after_room"] is True
    assert spare["health_after_room"] == "ok"


# --- the HTTP drill: results are returned, flagged, counted; DELETE frees room ---------------


def _metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{name}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_full_store_over_http_returns_results_flags_them_and_recovers(
    server_factory, caplog
) -> None:
    with server_factory(store={"max_size_mb": 0.06, "reserve_mb": 0}) as live, live.client() as c:
        full = None
        for i in range(40):
            shots = [shot(i * 2 + k, n_frames=1) for k in range(2)]
            r = c.post("/analyze_batch", json={"session_id": "film-a", "shots": shots})
            assert r.status_code == 200, r.text
            body = r.json()
            # Finished work is never lost: every result is there whether stored or not.
            assert [x["shot_id"] for x in body["results"]] == [s["shot_id"] for s in shots]
            assert all(x["caption"] and len(x["attributes"]) == 6 for x in body["results"])
            if body["stored"] is False:
                full = body
                break
            assert body["stored"] is True and body["store_error"] is None
        assert full is not None, "the capped store never filled"
        assert "database or disk is full" in full["store_error"]
        stored_before = c.get("/sessions/film-a").json()["shot_count"]

        for k in range(2):  # more failures: counted, not logged again
            r = c.post(
                "/analyze_batch",
                json={"session_id": "film-a", "shots": [shot(500 + k, n_frames=1)]},
            )
            assert r.status_code == 200 and r.json()["stored"] is False
        failures = [w for w in _store_warnings(caplog) if "failed" in w]
        assert len(failures) == 1, failures
        metrics = c.get("/metrics").text
        assert _metric(metrics, "qwen_store_failures_total", 'operation="save"') == 3

        health = httpx.get(live.url + "/health")
        assert health.status_code == 200  # analysis still serves: documented, not a 503
        assert health.json()["store"].startswith("error: last write failed")
        # Nothing half-stored: the session holds exactly what was acknowledged as stored.
        assert c.get("/sessions/film-a").json()["shot_count"] == stored_before

        assert c.delete("/sessions/film-a").status_code == 204
        assert c.get("/sessions/film-a").status_code == 404
        assert httpx.get(live.url + "/health").json()["store"] == "ok"
        r = c.post("/analyze_batch", json={"session_id": "film-b", "shots": [shot(1, n_frames=1)]})
        assert r.json()["stored"] is True
        assert c.get("/sessions/film-b").json()["shot_count"] == 1
        # Without a session nothing is stored, and the response says so with null.
        r = c.post("/analyze_batch", json={"shots": [shot(2, n_frames=1)]})
        assert r.json()["stored"] is None and r.json()["store_error"] is None
