"""``JobManager``: the film jobs of this server, from queued to a final state.

* **One implementation.** A job runs the client's own ``client.pipeline.run.analyze`` (its
  ``Run``, ``ShotSource`` and ``Poster``, the results folder ``jobs.dir/<id>/results`` written
  exactly as ``qwen-client analyze`` writes it), with ``InProcessServers`` in place of the HTTP
  server pool: batches go straight to the engine's queue and into the session.
* **Off the event loop.** Each running job has its own thread (the client pipeline is
  blocking); decoding runs in ``jobs.decode_workers`` worker processes (the client's
  ``ChunkedShotSource``; with 1, the one-pass ``ShotSource`` in its own thread). The loop only
  schedules, answers status and runs ``analyze_shots`` for the job's batches.
* **Limits.** At most ``jobs.max_running`` jobs run at once; the others wait queued, oldest
  first.
* **Stop.** Cancel and shutdown set the job's ``StopFlag``: the decode thread stops at its next
  frame (``JobProgress.frame``), the batch in the engine is cancelled, every thread of the run
  is joined. A cancelled job keeps the shots already stored in its session; its upload is
  removed unless ``jobs.keep_uploads``.
* **Persistence and resume.** Every state change and, while running, the progress about once a
  second are written to the ``jobs`` table. At start-up the jobs left queued, decoding or
  analysing are queued again: ``Run`` resumes from the results folder's shots.jsonl (done shots
  are detected again but not re-analysed), and the session's saves are upserts, so a batch
  analysed again after a crash replaces its rows: no shot lost, none doubled. A shutdown stops
  running jobs the same way without changing their state, so they resume at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from client.options import PostingOptions

from ..config import Settings
from ..errors import Conflict, NotFound, QwenServerError
from ..logsafe import escape_log
from ..store.jobs_table import JobRow
from ..store.protocol import JobsTableProtocol
from .intake import probe_video, remove_tree
from .models import FINISHED, JobOptions, JobSource, JobStatus
from .progress import JobProgress
from .transport import InProcessServers, JobStopped, StopFlag

log = logging.getLogger("qwen_server.jobs")

PERSIST_EVERY_S = 1.0
JOIN_TIMEOUT_S = 30.0


def now_iso() -> str:
    """Millisecond ISO 8601 UTC (sorts in time order), as the session store writes."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds_between(start: str | None, end: str | None) -> float:
    if start is None:
        return 0.0
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(timezone.utc)
    return round(max(0.0, (t1 - t0).total_seconds()), 3)


def new_job_id() -> str:
    """A short random job id (URL- and session-id-safe)."""
    return uuid.uuid4().hex[:16]


@dataclass
class LiveJob:
    """A job this process is running (or about to): its row, stop flag, counters, thread."""

    row: JobRow
    stop: StopFlag = field(default_factory=StopFlag)
    progress: JobProgress | None = None
    thread: threading.Thread | None = None


class JobManager:
    """The jobs of this server (see the module doc); ``app_state`` is the FastAPI app's state
    (engine, store, settings, decode_pool, metrics), read when a job runs."""

    def __init__(self, app_state: Any, settings: Settings) -> None:
        self.state = app_state
        self.settings = settings
        self.folder = settings.jobs.folder(settings.store.path)
        self.table: JobsTableProtocol | None = None  # set by start(), once the store is open
        self._own_store: Any = None
        self._live: dict[str, LiveJob] = {}
        self._queue: list[str] = []
        self._running: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._persist_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the jobs folder and queue again the jobs a previous run left active."""
        self._loop = asyncio.get_running_loop()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.table = await asyncio.to_thread(self._open_table)
        rows = await asyncio.to_thread(self.table.active)
        for row in rows:
            log.info("resuming job %s (%s, was %s)", row.job_id, row.source_name, row.state)
            self._live[row.job_id] = LiveJob(row)
            self._queue.append(row.job_id)
        self._persist_task = asyncio.create_task(self._persist_loop())
        self._pump()

    def _open_table(self) -> JobsTableProtocol:
        """The jobs table: the session database's (``store.jobs_table()``) when that is this
        box's SQLite file. With a PostgreSQL store shared by several boxes, a SQLite file of
        its own in the jobs folder instead: a job's upload, results folder and runner are this
        box's alone, and a shared table would have every box resume every box's jobs at
        start-up, on files it does not have."""
        from ..store.sqlite import SessionStore

        store = self.state.store
        if not isinstance(store, SessionStore):
            store = SessionStore(self.folder / "jobs.sqlite3")
            store.open()
            self._own_store = store
        return store.jobs_table()

    async def stop(self) -> None:
        """Stop running jobs without changing their state (they resume at the next start) and
        wait for their threads."""
        if self._persist_task is not None:
            self._persist_task.cancel()
        self._queue.clear()
        threads = []
        for job_id in list(self._running):
            live = self._live[job_id]
            live.stop.set("shutdown")
            if live.thread is not None:
                threads.append(live.thread)
        for thread in threads:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
        if self._own_store is not None:
            self._own_store.close()

    def _table(self) -> JobsTableProtocol:
        if self.table is None:
            raise RuntimeError("the job manager is not started")
        return self.table

    # --- API ------------------------------------------------------------------------------------
    def paths(self, job_id: str) -> tuple[Path, Path, Path]:
        """(the job's folder, its upload folder, its results folder)."""
        base = self.folder / job_id
        return base, base / "upload", base / "results"

    async def create(self, row: JobRow) -> JobStatus:
        """Store a new queued job and start it when a running slot is free."""
        await asyncio.to_thread(self._table().insert, row)
        self._live[row.job_id] = LiveJob(row)
        self._queue.append(row.job_id)
        log.info("job %s queued (%s %s)", row.job_id, row.source_kind, escape_log(row.source_name))
        self._pump()
        return self.status_of(row)

    async def get(self, job_id: str) -> JobStatus:
        """The job's status; NotFound for an unknown id."""
        live = self._live.get(job_id)
        if live is not None:
            return self.status_of(live.row, live.progress)
        row = await asyncio.to_thread(self._table().get, job_id)
        if row is None:
            raise NotFound(f"job not found: {job_id}")
        return self.status_of(row)

    async def page(self, limit: int, offset: int) -> tuple[list[JobStatus], int]:
        """One page of jobs, newest first (live counters for running ones)."""
        rows, total = await asyncio.to_thread(self._table().page, limit=limit, offset=offset)
        out = []
        for row in rows:
            live = self._live.get(row.job_id)
            out.append(self.status_of(live.row, live.progress) if live else self.status_of(row))
        return out, total

    async def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued or running job (409 when already finished); returns its final
        status once its threads have stopped."""
        live = self._live.get(job_id)
        if live is None:
            status = await self.get(job_id)  # NotFound, or a finished job
            if status.state not in FINISHED:
                # Another process sharing this table runs it (e.g. a second Serve ingress):
                # only its runner can stop it.
                raise Conflict(
                    f"job {job_id} is {status.state} in another server process; cancel it "
                    "through the server that runs it"
                )
            raise Conflict(f"job {job_id} is already {status.state}")
        live.stop.set("cancelled")
        if job_id in self._queue:
            self._queue.remove(job_id)
            await asyncio.to_thread(self._finish, live, "cancelled", None)
            self._live.pop(job_id, None)
        elif live.thread is not None:
            await asyncio.to_thread(live.thread.join, JOIN_TIMEOUT_S)
        return await self.get(job_id)

    def status_of(self, row: JobRow, progress: JobProgress | None = None) -> JobStatus:
        """A row (and, while running, its live counters) as the API's JobStatus."""
        counts: dict[str, Any] = dict(row.progress)
        if progress is not None:
            snap = progress.snapshot()
            counts = {
                "frames_decoded": snap.frames_decoded,
                "frames_total": snap.frames_total,
                "shots_found": snap.shots_found,
                "shots_analysed": snap.shots_analysed,
                "eta_s": snap.eta_s,
            }
        if row.state in FINISHED:
            counts["eta_s"] = None if row.state != "done" else 0.0
        return JobStatus(
            job_id=row.job_id,
            state=row.state,
            source=JobSource(kind=row.source_kind, name=row.source_name),
            session_id=row.session_id,
            title=row.title,
            options=row.options,
            frames_decoded=counts.get("frames_decoded", 0),
            frames_total=counts.get("frames_total"),
            shots_found=counts.get("shots_found", 0),
            shots_analysed=counts.get("shots_analysed", 0),
            elapsed_s=_seconds_between(row.started_at, row.finished_at),
            eta_s=counts.get("eta_s"),
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    # --- scheduling -------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Start queued jobs while a running slot is free (on the event loop)."""
        while self._queue and len(self._running) < self.settings.jobs.max_running:
            job_id = self._queue.pop(0)
            live = self._live[job_id]
            self._running.add(job_id)
            live.thread = threading.Thread(
                target=self._run, args=(live,), name=f"job-{job_id}", daemon=False
            )
            live.thread.start()

    def _ended(self, job_id: str) -> None:
        """A job's thread ended (on the event loop): free its slot, start the next."""
        self._running.discard(job_id)
        # Finished, or stopped by a shutdown (it resumes at the next start): the table has it.
        self._live.pop(job_id, None)
        self._pump()

    # --- a job's thread ---------------------------------------------------------------------------
    def _run(self, live: LiveJob) -> None:
        row = live.row
        try:
            self._execute(live)
        except JobStopped as stopped:
            if stopped.reason == "cancelled":
                self._finish(live, "cancelled", None)
                log.info("job %s cancelled", row.job_id)
            else:
                self._save_progress(live)
                log.info("job %s stopped by the shutdown; it resumes at the next start", row.job_id)
        except Exception as exc:
            if live.stop.reason == "cancelled":
                self._finish(live, "cancelled", None)
            elif live.stop.reason == "shutdown":
                self._save_progress(live)
            else:
                message = exc.message if isinstance(exc, QwenServerError) else str(exc)
                message = message.replace(str(self.folder), "jobs.dir") or type(exc).__name__
                log.warning("job %s failed: %s", row.job_id, escape_log(message))
                self._finish(live, "failed", message)
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._ended, row.job_id)

    def _execute(self, live: LiveJob) -> None:
        """Run the client's analyze pass for the job to its end (raises on stop or failure)."""
        from client.pipeline.run import analyze

        row = live.row
        live.stop.check()
        options = JobOptions.model_validate(row.options)
        _base, _upload, results = self.paths(row.job_id)
        info = probe_video(Path(row.source_path), row.source_name)
        live.progress = JobProgress(info.frame_estimate, live.stop)
        started = row.started_at or now_iso()
        self._set(live, state="decoding", started_at=started)
        assert self._loop is not None
        jobs = self.settings.jobs
        servers = InProcessServers(
            self.state,
            self._loop,
            PostingOptions(batch_size=jobs.batch_size, in_flight=jobs.in_flight),
            live.stop,
        )
        # Decoding: jobs.decode_workers processes (the client's ChunkedShotSource, the same
        # shots as one pass); 1 is the one-pass ShotSource in a thread of this job.
        analyze(
            info,
            results,
            options.extract_options(),
            cast(Any, servers),  # duck-typed: the ServerPool interface Poster uses
            row.session_id,
            row.title,
            progress=cast(Any, live.progress),
            attributes=options.attribute_request(),
            frames=True,
            workers=jobs.workers(),
        )
        live.stop.check()
        self._finish(live, "done", None)
        log.info("job %s done: session %s", row.job_id, row.session_id)

    # --- persistence ------------------------------------------------------------------------------
    def _set(self, live: LiveJob, **fields: Any) -> None:
        """Update the row in memory and in the table."""
        with self._lock:  # held through the write: the table sees updates in memory order
            if live.row.state in FINISHED and fields.get("state", "") not in FINISHED:
                fields.pop("state", None)  # a late progress write never revives a finished job
                fields.pop("progress", None)
            if not fields:
                return
            for key, value in fields.items():
                setattr(live.row, key, value)
            self._table().update(live.row.job_id, **fields)

    def _counts(self, live: LiveJob) -> dict[str, Any]:
        if live.progress is None:
            return dict(live.row.progress)
        snap = live.progress.snapshot()
        return {
            "frames_decoded": snap.frames_decoded,
            "frames_total": snap.frames_total,
            "shots_found": snap.shots_found,
            "shots_analysed": snap.shots_analysed,
            "eta_s": snap.eta_s,
        }

    def _save_progress(self, live: LiveJob) -> None:
        self._set(live, progress=self._counts(live))

    def _finish(self, live: LiveJob, state: str, error: str | None) -> None:
        """Final state, counters and end time; the upload removed unless keep_uploads."""
        self._set(
            live, state=state, error=error, finished_at=now_iso(), progress=self._counts(live)
        )
        if live.row.source_kind == "upload" and not self.settings.jobs.keep_uploads:
            remove_tree(self.paths(live.row.job_id)[1])

    async def _persist_loop(self) -> None:
        """Write running jobs' counters and the decoding/analysing state about once a second."""
        while True:
            await asyncio.sleep(PERSIST_EVERY_S)
            for job_id in list(self._running):
                live = self._live.get(job_id)
                if live is None or live.progress is None or live.row.state in FINISHED:
                    continue
                snap = live.progress.snapshot()
                fields: dict[str, Any] = {"progress": self._counts(live)}
                if snap.decoding_done and live.row.state == "decoding":
                    fields["state"] = "analysing"
                try:
                    await asyncio.to_thread(self._set, live, **fields)
                except QwenServerError as exc:
                    log.warning("job %s: progress not saved (%s)", job_id, exc.message)
        # (cancelled by stop())
