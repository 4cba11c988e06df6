"""``JobManager``: the film jobs of this node, from queued to a final state.

* **One implementation.** A job runs the client's own ``client.pipeline.run.analyze`` (the
  results folder ``jobs.dir/<id>/results`` as ``qwen-client analyze`` writes it) with
  ``InProcessServers`` for the HTTP pool: batches go straight to the engine and the session.
* **Off the event loop.** Each running job has its own thread; decoding runs in
  ``jobs.decode_workers`` processes (the client's ``ChunkedShotSource``; 1: ``ShotSource``).
* **Shared table, claimed work.** The jobs live in the configured store's ``jobs`` table: the
  SQLite file of one box, or the PostgreSQL database every node shares. Each manager has a node
  id (``jobs.node_id``, default host name + a random suffix per start). A node with a free
  running slot (``jobs.max_running``) *claims* the oldest job no live node runs (queued, or
  active with an expired lease) atomically (``FOR UPDATE SKIP LOCKED`` / ``BEGIN IMMEDIATE``),
  on a new job, when a job ends and once a second. So a job may run on any node, and one whose
  node died is taken over once its lease (``jobs.lease_s``) runs out.
* **Heartbeat.** About once a second the owner saves each running job's counters and renews its
  lease in one write; the same write reads ``cancel_requested`` (a cancel asked on another node)
  and tells the owner whether it still owns the job (if not, another node took it over after
  its lease expired: this node stops it without writing more).
* **Stop.** Cancel and shutdown set the job's ``StopFlag``: the decode thread stops at its next
  frame (``JobProgress.frame``), the batch in the engine is cancelled, every thread of the run
  is joined. A cancelled job keeps the shots already stored in its session; its upload is
  removed unless ``jobs.keep_uploads``. A shutdown saves the counters and releases the job, so
  another node (or this one restarted) claims it at once.
* **Resume.** A claimed job that had started (its node died, or shut down) runs again from its
  results folder: ``Run`` resumes from shots.jsonl (done shots are detected again but not
  re-analysed), and the session's saves are upserts, so a batch analysed again replaces its
  rows: no shot lost, none doubled. For that the results folder must be the same on every node:
  with several nodes ``jobs.dir`` is shared storage (NFS etc.), mounted at the same path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from client.options import PostingOptions

from ..config import Settings
from ..errors import Conflict, InvalidInput, NotFound, QwenServerError
from ..logsafe import escape_log
from ..store.jobs_table import JobRow
from ..store.protocol import JobsTableProtocol
from .intake import probe_video, remove_tree
from .models import FINISHED, JobOptions, JobStatus
from .progress import JobProgress
from .status import live_counts, now_iso, status_of
from .transport import InProcessServers, JobStopped, StopFlag

log = logging.getLogger("qwen_server.jobs")

PERSIST_EVERY_S = 1.0  # the heartbeat: counters saved, lease renewed, cancel requests read
JOIN_TIMEOUT_S = 30.0
CANCEL_POLL_S = 0.2
CANCEL_WAIT_S = 20.0  # past the owner's lease: how long DELETE waits for another node's cancel

__all__ = ["JobManager", "new_job_id", "now_iso"]


def new_job_id() -> str:
    """A short random job id (URL- and session-id-safe)."""
    return uuid.uuid4().hex[:16]


def default_node_id() -> str:
    """The host name plus a random suffix: unique per process start."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


@dataclass
class LiveJob:
    """A job this node claimed and runs: its row, stop flag, counters, thread."""

    row: JobRow
    stop: StopFlag = field(default_factory=StopFlag)
    progress: JobProgress | None = None
    thread: threading.Thread | None = None


class JobManager:
    """The jobs of this node (see the module doc); ``app_state`` is the FastAPI app's state
    (engine, store, settings, decode_pool, metrics), read when a job runs."""

    def __init__(self, app_state: Any, settings: Settings) -> None:
        self.state = app_state
        self.settings = settings
        self.folder = settings.jobs.folder(settings.store.path)
        self.node = settings.jobs.node_id or default_node_id()
        self.lease_s = settings.jobs.lease_s
        self.table: JobsTableProtocol | None = None  # set by start(), once the store is open
        self._live: dict[str, LiveJob] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._claiming: asyncio.Lock | None = None
        self._stopping = False
        self._persist_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the jobs folder, give back the jobs this node id held before a restart (so
        they are claimed again at once, in order) and start claiming."""
        self._loop = asyncio.get_running_loop()
        self._claiming = asyncio.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.table = self.state.store.jobs_table()
        table = self.table
        for row in await asyncio.to_thread(table.active):
            if row.owner == self.node:
                await asyncio.to_thread(table.release, row.job_id, self.node)
        log.info("job manager on node %s (lease %.0f s)", escape_log(self.node), self.lease_s)
        self._persist_task = asyncio.create_task(self._persist_loop())
        self._pump()

    async def stop(self) -> None:
        """Stop running jobs without changing their state, wait for their threads, and
        release them (another node, or this one restarted, resumes them)."""
        self._stopping = True
        threads = []
        for live in list(self._live.values()):
            live.stop.set("shutdown")
            if live.thread is not None:
                threads.append(live.thread)
        for thread in threads:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
        if self._persist_task is not None:
            self._persist_task.cancel()

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
        """Store a new queued job; the first node with a free slot claims it."""
        await asyncio.to_thread(self._table().insert, row)
        log.info("job %s queued (%s %s)", row.job_id, row.source_kind, escape_log(row.source_name))
        self._pump()
        return status_of(row)

    async def get(self, job_id: str) -> JobStatus:
        """The job's status (live counters when this node runs it); NotFound for an unknown
        id."""
        live = self._live.get(job_id)
        if live is not None:
            return status_of(live.row, live.progress)
        row = await asyncio.to_thread(self._table().get, job_id)
        if row is None:
            raise NotFound(f"job not found: {job_id}")
        return status_of(row)

    async def page(self, limit: int, offset: int) -> tuple[list[JobStatus], int]:
        """One page of jobs, newest first (live counters for the ones running here)."""
        rows, total = await asyncio.to_thread(self._table().page, limit=limit, offset=offset)
        out = []
        for row in rows:
            live = self._live.get(row.job_id)
            out.append(status_of(live.row, live.progress) if live else status_of(row))
        return out, total

    async def cancel(self, job_id: str) -> tuple[JobStatus, bool]:
        """Cancel a queued or running job (409 when already finished). Returns its status and
        whether the cancel is confirmed (state cancelled); False only when another node runs
        the job and had not confirmed within ``CANCEL_WAIT_S`` (its ``cancel_requested``
        stays set: it stops at its next heartbeat, or its job is cancelled once its lease
        runs out)."""
        live = self._live.get(job_id)
        if live is not None:
            try:  # durable: should this node die before the job stops, its next node cancels it
                await asyncio.to_thread(self._table().request_cancel, job_id, now_iso())
            except QwenServerError as exc:
                log.warning("job %s: cancel request not stored (%s)", job_id, exc.message)
            live.stop.set("cancelled")
            if live.thread is not None:
                await asyncio.to_thread(live.thread.join, JOIN_TIMEOUT_S)
            return await self.get(job_id), True
        status = await self.get(job_id)  # NotFound
        if status.state in FINISHED:
            raise Conflict(f"job {job_id} is already {status.state}")
        table = self._table()
        deadline = asyncio.get_running_loop().time() + self.lease_s + CANCEL_WAIT_S
        while True:
            # Cancels at once a job no live node runs; else asks its owner (idempotent).
            row = await asyncio.to_thread(table.request_cancel, job_id, now_iso())
            if row is None:
                raise NotFound(f"job not found: {job_id}")
            if row.state in FINISHED:
                if row.state == "cancelled":
                    await asyncio.to_thread(self._remove_upload, row)  # done twice is harmless
                return status_of(row), row.state == "cancelled"
            if asyncio.get_running_loop().time() > deadline:
                return status_of(row), False
            await asyncio.sleep(CANCEL_POLL_S)

    async def purge(self, job_id: str) -> JobStatus:
        """Remove a finished job's files (its upload and results folder); the session and the
        job's row stay. 409 while the job is not finished."""
        status = await self.get(job_id)
        if status.state not in FINISHED or job_id in self._live:
            raise Conflict(f"job {job_id} is {status.state}: cancel it before purging its files")
        await asyncio.to_thread(remove_tree, self.paths(job_id)[0])
        if status.purged_at is None:
            await asyncio.to_thread(self._table().update, job_id, purged_at=now_iso())
        log.info("job %s: files purged", job_id)
        return await self.get(job_id)

    # --- scheduling -------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Claim jobs while a running slot is free (on the event loop; one claimer at a time)."""
        if self._stopping or self._loop is None:
            return
        if len(self._live) >= self.settings.jobs.max_running:
            return
        task = self._loop.create_task(self._claim())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self) -> None:
        assert self._claiming is not None
        async with self._claiming:
            while not self._stopping and len(self._live) < self.settings.jobs.max_running:
                try:
                    row = await asyncio.to_thread(self._table().claim, self.node, self.lease_s)
                except QwenServerError as exc:
                    log.warning("claiming a job failed: %s", exc.message)
                    return
                if row is None:
                    return
                if row.started_at is not None or row.state != "queued":
                    log.info(
                        "resuming job %s (%s, was %s)",
                        row.job_id,
                        escape_log(row.source_name),
                        row.state,
                    )
                else:
                    log.info("job %s claimed by node %s", row.job_id, escape_log(self.node))
                live = LiveJob(row)
                self._live[row.job_id] = live
                live.thread = threading.Thread(
                    target=self._run, args=(live,), name=f"job-{row.job_id}", daemon=False
                )
                live.thread.start()

    def _ended(self, job_id: str) -> None:
        """A job's thread ended (on the event loop): free its slot, claim the next."""
        self._live.pop(job_id, None)
        self._pump()

    # --- a job's thread ---------------------------------------------------------------------------
    def _run(self, live: LiveJob) -> None:
        row = live.row
        try:
            self._execute(live)
        except JobStopped as stopped:
            self._stopped(live, stopped.reason)
        except Exception as exc:
            if live.stop.reason is not None:
                self._stopped(live, live.stop.reason)
            else:
                message = exc.message if isinstance(exc, QwenServerError) else str(exc)
                message = message.replace(str(self.folder), "jobs.dir") or type(exc).__name__
                log.warning("job %s failed: %s", row.job_id, escape_log(message))
                self._finish(live, "failed", message)
        finally:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._ended, row.job_id)

    def _stopped(self, live: LiveJob, reason: str) -> None:
        job_id = live.row.job_id
        if reason == "cancelled":
            self._finish(live, "cancelled", None)
            log.info("job %s cancelled", job_id)
        elif reason == "lost":
            log.warning("job %s: its lease was taken over by another node; stopped here", job_id)
        else:
            try:
                self._save_progress(live)
                self._table().release(job_id, self.node)
            except QwenServerError as exc:  # its lease runs out instead
                log.warning("job %s: not released (%s)", job_id, exc.message)
            log.info("job %s stopped by the shutdown; released for another node", job_id)

    def _execute(self, live: LiveJob) -> None:
        """Run the client's analyze pass for the job to its end (raises on stop or failure)."""
        from client.pipeline.run import analyze

        row = live.row
        if row.cancel_requested:  # asked while its previous node was dying
            live.stop.set("cancelled")
        live.stop.check()
        options = JobOptions.model_validate(row.options)
        _base, _upload, results = self.paths(row.job_id)
        source = Path(row.source_path)
        if not source.is_file():
            raise InvalidInput(
                f"the job's film is not visible on node {self.node}: jobs.dir (uploads) and "
                "jobs.media_roots must be the same shared storage on every node"
            )
        info = probe_video(source, row.source_name)
        live.progress = JobProgress(info.frame_estimate, live.stop)
        self._set(live, state="decoding", started_at=row.started_at or now_iso())
        assert self._loop is not None
        jobs = self.settings.jobs
        servers = InProcessServers(
            self.state,
            self._loop,
            PostingOptions(batch_size=jobs.batch_size, in_flight=jobs.in_flight),
            live.stop,
        )
        # Decoding: jobs.decode_workers processes (the client's ChunkedShotSource, the same
        # shots as one pass); 1 is one worker process decoding the film in one pass.
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
            decode_in_process=False,  # one worker is one process too: never in the server
        )
        live.stop.check()
        self._finish(live, "done", None)
        log.info("job %s done: session %s", row.job_id, row.session_id)

    # --- persistence ------------------------------------------------------------------------------
    def _set(self, live: LiveJob, **fields: Any) -> None:
        """Update the row in memory and in the table, while this node owns the job (else the
        job stops: another node took it over)."""
        with self._lock:  # held through the write: the table sees updates in memory order
            if live.stop.reason == "lost":
                return
            if live.row.state in FINISHED and fields.get("state", "") not in FINISHED:
                fields.pop("state", None)  # a late progress write never revives a finished job
                fields.pop("progress", None)
            if not fields:
                return
            if not self._table().update(live.row.job_id, owner=self.node, **fields):
                live.stop.set("lost")
                return
            for key, value in fields.items():
                setattr(live.row, key, value)

    def _counts(self, live: LiveJob) -> dict[str, Any]:
        return dict(live.row.progress) if live.progress is None else live_counts(live.progress)

    def _save_progress(self, live: LiveJob) -> None:
        self._set(live, progress=self._counts(live))

    def _remove_upload(self, row: JobRow) -> None:
        if row.source_kind == "upload" and not self.settings.jobs.keep_uploads:
            remove_tree(self.paths(row.job_id)[1])

    def _finish(self, live: LiveJob, state: str, error: str | None) -> None:
        """Final state, counters and end time; the upload removed unless keep_uploads."""
        self._set(
            live, state=state, error=error, finished_at=now_iso(), progress=self._counts(live)
        )
        if live.row.state == state:
            self._remove_upload(live.row)

    def _heartbeat(self, live: LiveJob) -> None:
        """Renew the lease with the counters (and decoding -> analysing); act on a cancel
        asked elsewhere or on a lost lease."""
        with self._lock:
            # A job stopping (cancel, shutdown) keeps its lease until its threads are joined.
            if live.row.state in FINISHED or live.stop.reason == "lost":
                return
            fields: dict[str, Any] = {}
            if live.progress is not None:
                fields["progress"] = live_counts(live.progress)
                if live.progress.snapshot().decoding_done and live.row.state == "decoding":
                    fields["state"] = "analysing"
            answer = self._table().renew(live.row.job_id, self.node, self.lease_s, **fields)
            if answer is None:
                live.stop.set("lost")
                return
            for key, value in fields.items():
                setattr(live.row, key, value)
            if answer and live.stop.reason is None:
                live.row.cancel_requested = True
                live.stop.set("cancelled")

    async def _persist_loop(self) -> None:
        """The heartbeat of running jobs, then a claim when a slot is free (jobs created on
        other nodes, leases expired), about once a second."""
        while True:
            await asyncio.sleep(PERSIST_EVERY_S)
            for job_id, live in list(self._live.items()):
                try:
                    await asyncio.to_thread(self._heartbeat, live)
                except QwenServerError as exc:
                    log.warning("job %s: heartbeat not saved (%s)", job_id, exc.message)
            self._pump()
        # (cancelled by stop())
