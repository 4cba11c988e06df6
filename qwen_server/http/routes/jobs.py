"""``/jobs``: server-side film jobs (``qwen_server.jobs``).

``POST /jobs`` takes a film as a multipart upload (field ``file``, streamed to disk; optional
field ``options``, a JSON object) or as JSON ``{"path": ..., <options>}`` naming a file under
``jobs.media_roots``, checks it (403 outside the roots, 422 not a video, 413 over
``server.max_upload_mb``, 507 over ``jobs.max_disk_gb``) and answers 202 with the job's id and
URLs. ``GET /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/events`` (SSE), ``DELETE /jobs/{id}``
(cancel; ``?purge=true``: a finished job's files removed) and ``GET /jobs/{id}/results`` (the
results folder as a tar). Any node answers any job: the status is the shared row's. Auth is
the app's middleware; errors are domain errors mapped in ``app``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from ...contract.vocabulary import VocabularyError, resolve_requested
from ...errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from ...jobs.events import job_events
from ...jobs.intake import (
    check_quota,
    probe_video,
    receive_upload,
    remove_tree,
    resolve_media_path,
    safe_file_name,
)
from ...jobs.models import JobCreated, JobOptions, JobPage, JobStatus
from ...jobs.results_tar import tar_stream
from ...jobs.runner import JobManager, new_job_id, now_iso
from ...store.jobs_table import JobRow
from ...store.sqlite import check_session_id

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_JSON_BYTES = 64 * 1024  # the JSON body of a path job
MAX_OFFSET = 1_000_000_000

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer key"},
    404: {"description": "No such job"},
    503: {"description": "The job store cannot be read or written (reason in detail)"},
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer key"},
    403: {"description": "Path outside jobs.media_roots (or path jobs disabled)"},
    413: {"description": "Upload over server.max_upload_mb (the partial file is removed)"},
    422: {"description": "Not a video, missing file, bad options"},
    507: {"description": "Not enough job space under jobs.max_disk_gb"},
}


def _jobs(request: Request) -> JobManager:
    return request.app.state.jobs


def _options(raw: dict[str, Any], request: Request) -> JobOptions:
    """JobOptions from the caller's fields, checked against this server's limits and
    vocabulary before anything is queued."""
    try:
        options = JobOptions.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInput(f"options.{where}: {first.get('msg', 'invalid value')}") from None
    settings = request.app.state.settings
    if options.session_id is not None:
        check_session_id(options.session_id)
    limit = settings.server.max_images_per_shot
    if options.frames_per_shot > limit:
        raise InvalidInput(
            f"options.frames_per_shot {options.frames_per_shot} > {limit} "
            "(server.max_images_per_shot)"
        )
    options.extract_options()  # InvalidInput when the client's options refuse a value
    request_ = options.attribute_request()
    if request_ is not None:
        try:
            resolve_requested(list(request_.names), settings.analysis.vocabulary)
        except VocabularyError as exc:
            raise InvalidInput(f"options.attributes: {exc}") from None
    return options


def _row(
    job_id: str, kind: str, name: str, path: Path, options: JobOptions, info_title: str
) -> JobRow:
    session_id = options.session_id or f"job-{job_id}"
    title = options.title or info_title
    stored = options.model_dump()
    stored.update(session_id=session_id, title=title)
    return JobRow(
        job_id=job_id,
        state="queued",
        source_kind=kind,
        source_name=name,
        source_path=str(path),
        session_id=session_id,
        title=title,
        options=stored,
        progress={},
        error=None,
        created_at=now_iso(),
        started_at=None,
        finished_at=None,
    )


def _created(status: JobStatus) -> JobCreated:
    jid = status.job_id
    return JobCreated(
        job_id=jid,
        state=status.state,
        session_id=status.session_id,
        urls={
            "self": f"/jobs/{jid}",
            "events": f"/jobs/{jid}/events",
            "results": f"/jobs/{jid}/results",
            "session": f"/sessions/{status.session_id}",
        },
    )


async def _json_body(request: Request) -> dict[str, Any]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLarge("a path job's JSON body is limited to 64 KB")
    try:
        value = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput('body must be a JSON object: {"path": ..., <options>}')
    return value


# The body is read by the route itself (streamed to disk), so it is documented here by hand.
_OPTIONS_SCHEMA = JobOptions.model_json_schema()
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "options": {
                            "type": "string",
                            "description": "JobOptions as a JSON object (optional)",
                        },
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["path"],
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "A film under jobs.media_roots (relative or absolute)",
                        },
                        **_OPTIONS_SCHEMA["properties"],
                    },
                    "additionalProperties": False,
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobCreated,
    responses=_CREATE_ERRORS,
    summary="Create a film job (multipart upload or a path under jobs.media_roots)",
    openapi_extra=_CREATE_BODY,
)
async def create_job(request: Request) -> JobCreated:
    """Check the film and queue the job; results go to the session as shots finish."""
    jobs = _jobs(request)
    settings = request.app.state.settings
    content_type = request.headers.get("content-type", "")
    job_id = new_job_id()
    base, upload_dir, _results = jobs.paths(job_id)
    if content_type.lower().startswith("application/json"):
        raw = await _json_body(request)
        path_value = raw.pop("path", None)
        if path_value is None:
            raise InvalidInput('a JSON job needs "path" (or upload the film as multipart)')
        options = _options(raw, request)
        path = resolve_media_path(path_value, settings.jobs.media_roots)
        await asyncio.to_thread(check_quota, jobs.folder, 0, settings.jobs.max_disk_gb)
        name = safe_file_name(path.name)
        await asyncio.to_thread(probe_video, path, name)
        row = _row(job_id, "path", name, path, options, path.name)
        return _created(await jobs.create(row))
    declared = request.headers.get("content-length")
    try:
        upload = await receive_upload(
            request.stream(),
            content_type,
            int(declared) if declared and declared.isdigit() else None,
            upload_dir,
            max_upload_mb=settings.server.max_upload_mb,
            jobs_folder=jobs.folder,
            max_disk_gb=settings.jobs.max_disk_gb,
        )
        options = _options(upload.options, request)
        await asyncio.to_thread(probe_video, upload.path, upload.name)
        row = _row(job_id, "upload", upload.name, upload.path, options, upload.name)
        return _created(await jobs.create(row))
    except BaseException:
        await asyncio.to_thread(remove_tree, base)  # the partial or refused upload
        raise


@router.get("", response_model=JobPage, responses=_ERRORS, summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> JobPage:
    """One page of jobs with their status."""
    jobs, total = await _jobs(request).page(limit, offset)
    return JobPage(jobs=jobs, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobStatus, responses=_ERRORS, summary="A job's status")
async def get_job(job_id: str, request: Request) -> JobStatus:
    """State, frames decoded/total, shots found/analysed, elapsed, ETA, error."""
    return await _jobs(request).get(job_id)


@router.get(
    "/{job_id}/events",
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
    summary="A job's status as Server-Sent Events (ends with event: end)",
)
async def job_event_stream(job_id: str, request: Request) -> StreamingResponse:
    """``event: status`` at least once a second and on every change; ``event: end`` with the
    final status when the job is done, failed or cancelled."""
    jobs = _jobs(request)
    await jobs.get(job_id)  # 404 before the stream starts
    run = request.app.state.run
    return StreamingResponse(
        job_events(lambda: jobs.get(job_id), lambda: run.draining),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete(
    "/{job_id}",
    response_model=JobStatus,
    responses={
        **_ERRORS,
        202: {
            "model": JobStatus,
            "description": "Another node runs the job and has not confirmed the cancel yet "
            "(cancel_requested: true; it stops at its next heartbeat)",
        },
        409: {
            "description": "The job already finished (its state named); with purge=true: "
            "the job is not finished"
        },
    },
    summary="Cancel a queued or running job; purge=true: remove a finished job's files",
)
async def cancel_job(
    job_id: str,
    request: Request,
    purge: bool = Query(False, description="Remove a finished job's upload and results"),
) -> Any:
    """Stops the job's workers wherever it runs (200 once cancelled; the shots already
    analysed stay in the session). ``purge=true`` on a done, failed or cancelled job removes
    its files under jobs.dir instead (its session and status stay)."""
    jobs = _jobs(request)
    if purge:
        return await jobs.purge(job_id)
    status, confirmed = await jobs.cancel(job_id)
    if confirmed:
        return status
    return JSONResponse(status.model_dump(mode="json"), status_code=202)


@router.get(
    "/{job_id}/results",
    responses={
        **_ERRORS,
        200: {"content": {"application/x-tar": {}}},
        409: {"description": "Not done (partial=1 allows a cancelled or failed job's results)"},
    },
    summary="The job's results folder as a tar",
)
async def job_results(
    job_id: str, request: Request, partial: bool = Query(False)
) -> StreamingResponse:
    """shots.jsonl, shots.csv, summary.json, run.json and frames/, as ``analyze`` writes them."""
    jobs = _jobs(request)
    status = await jobs.get(job_id)
    allowed = {"done", "cancelled", "failed"} if partial else {"done"}
    if status.state not in allowed:
        hint = "" if partial or status.state not in ("cancelled", "failed") else " (?partial=1)"
        raise Conflict(f"job {job_id} is {status.state}: no results to download{hint}")
    if status.purged_at is not None:
        raise Conflict(f"job {job_id}'s files were purged at {status.purged_at}")
    folder = jobs.paths(job_id)[2]
    if not folder.is_dir():
        if status.started_at is None:
            raise NotFound(f"job {job_id} has no results folder (it never started)")
        # It ran on a node whose jobs.dir this node does not see (not shared storage).
        raise Conflict(
            f"job {job_id}'s results folder is not visible from node {jobs.node} (the job ran "
            f"on node {status.node}): jobs.dir must be storage shared by every node, or "
            "download from that node"
        )
    return StreamingResponse(
        tar_stream(folder),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-results.tar"'},
    )
