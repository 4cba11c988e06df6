"""What a new job must pass before it is queued: a path inside ``jobs.media_roots``, a file
PyAV opens as a video, room under ``jobs.max_disk_gb``; and the upload itself, streamed to the
job's folder with ``server.max_upload_mb`` and the quota enforced while reading.

Every refusal is a domain error (403, 413, 422, 507) whose message names the setting or the
problem but never a server path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import InputError
from client.media.probe import VideoInfo, probe

from ..errors import Forbidden, InsufficientStorage, InvalidInput, PayloadTooLarge
from .multipart import MultipartReader, PartData, PartEnd, PartStart, boundary_of

log = logging.getLogger("qwen_server.jobs")

GB = 1024**3
MB = 1024**2
MAX_OPTIONS_BYTES = 64 * 1024  # the `options` form field
WRITE_CHUNK = 1 * MB  # upload bytes gathered before one write (in a thread)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_file_name(name: str | None) -> str:
    """The last component of a sent file name with unusual characters replaced, at most 200
    characters ("film" when nothing is left): the upload's name on disk and in the status."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" .")[:200]
    return base or "film"


def resolve_media_path(raw: str, roots: list[Path]) -> Path:
    """The real path of ``raw`` (symlinks followed) when it lies inside one of ``roots``.

    A relative path is taken relative to each root in turn. Outside every root (``..``, an
    absolute path elsewhere, a symlink pointing out) is 403 whether or not the file exists, so
    the answer says nothing about the rest of the disk; inside a root but missing is 422.
    """
    if not roots:
        raise Forbidden("path jobs are disabled on this server (jobs.media_roots is empty)")
    if not isinstance(raw, str) or not raw or "\x00" in raw:
        raise InvalidInput("path must be a non-empty string")
    candidates = [Path(raw)] if os.path.isabs(raw) else [Path(root) / raw for root in roots]
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if any(real == root or root in real.parents for root in real_roots):
            if not real.is_file():
                raise InvalidInput(f"file not found under jobs.media_roots: {raw}")
            return real
    raise Forbidden("path is outside the server's media roots (jobs.media_roots)")


def disk_used(folder: Path) -> int:
    """Bytes of every file under ``folder`` (uploads and results of every job)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed meanwhile
                continue
    return total


def check_quota(folder: Path, incoming: int, max_disk_gb: float) -> None:
    """507 when ``incoming`` more bytes would take the jobs folder past ``jobs.max_disk_gb``."""
    used = disk_used(folder)
    if used + incoming > int(max_disk_gb * GB):
        raise quota_error(used, incoming, max_disk_gb)


def quota_error(used: int, incoming: int, max_disk_gb: float) -> InsufficientStorage:
    """The 507 of a job that does not fit under ``jobs.max_disk_gb``."""
    return InsufficientStorage(
        f"not enough job space: {used / GB:.3f} GB in use + {incoming / GB:.3f} GB for this "
        f"job exceeds jobs.max_disk_gb ({max_disk_gb:g} GB); remove finished jobs' folders "
        "from jobs.dir or raise the quota"
    )


def probe_video(path: Path, shown_name: str) -> VideoInfo:
    """The film's VideoInfo, or 422 when PyAV cannot open it as a video (names the file as
    the caller knows it, never the server path)."""
    try:
        return probe(path)
    except InputError as exc:
        message = str(exc).replace(str(path), shown_name)
        raise InvalidInput(f"not a usable video: {message}") from None


@dataclass
class Upload:
    """A film received by ``receive_upload``: its path in the job's folder, the name it was
    sent with, its size, and the ``options`` form field (parsed JSON, {} when absent)."""

    path: Path
    name: str
    size: int
    options: dict[str, Any]


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str,
    declared: int | None,
    dest: Path,
    *,
    max_upload_mb: float,
    jobs_folder: Path,
    max_disk_gb: float,
) -> Upload:
    """Stream a multipart body's ``file`` field into ``dest`` (a new folder), counting bytes:
    past ``server.max_upload_mb`` 413, past the disk quota 507, both with the partial file
    removed (the caller removes ``dest`` on any error)."""
    max_bytes = int(max_upload_mb * MB)
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(_too_large(max_upload_mb), headers={"Connection": "close"})
    used = disk_used(jobs_folder)
    limit = int(max_disk_gb * GB)
    if used + (declared or 0) > limit:
        raise quota_error(used, declared or 0, max_disk_gb)
    reader = MultipartReader(boundary_of(content_type))
    dest.mkdir(parents=True, exist_ok=False)
    received = 0
    upload: Upload | None = None
    options_raw = bytearray()
    current: str | None = None  # "file", "options" or None (an ignored field)
    handle = None
    pending = bytearray()
    try:
        async for chunk in _with_end(chunks):
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(_too_large(max_upload_mb), headers={"Connection": "close"})
            if used + received > limit:  # a body without (or under) its declared length
                raise quota_error(used, received, max_disk_gb)
            for event in reader.feed(chunk):
                if isinstance(event, PartStart):
                    current = event.name if event.name in ("file", "options") else None
                    if current == "file":
                        if upload is not None:
                            raise InvalidInput("send one film per job (one 'file' field)")
                        name = safe_file_name(event.filename)
                        upload = Upload(dest / name, name, 0, {})
                        handle = await asyncio.to_thread(open, upload.path, "wb")
                elif isinstance(event, PartData):
                    if current == "file" and upload is not None:
                        upload.size += len(event.data)
                        pending += event.data
                        if len(pending) >= WRITE_CHUNK:
                            await asyncio.to_thread(handle.write, bytes(pending))  # type: ignore[union-attr]
                            pending.clear()
                    elif current == "options":
                        options_raw += event.data
                        if len(options_raw) > MAX_OPTIONS_BYTES:
                            raise InvalidInput("options field over 64 KB")
                elif isinstance(event, PartEnd) and current == "file" and handle is not None:
                    await asyncio.to_thread(_finish, handle, bytes(pending))
                    pending.clear()
                    handle = None
    finally:
        if handle is not None:
            handle.close()
    if upload is None:
        raise InvalidInput("multipart body without a 'file' field (the film)")
    if upload.size == 0:
        raise InvalidInput("the uploaded file is empty")
    upload.options = _parse_options(bytes(options_raw)) if options_raw else {}
    return upload


def _finish(handle: Any, data: bytes) -> None:
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


async def _with_end(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body's chunks, then b"" (the reader's end-of-body mark)."""
    async for chunk in chunks:
        if chunk:
            yield chunk
    yield b""


def _too_large(max_upload_mb: float) -> str:
    return f"upload exceeds the limit of {max_upload_mb:g} MB (server.max_upload_mb)"


def _parse_options(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("options: not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("options: must be a JSON object")
    return value


def remove_tree(path: Path) -> None:
    """Remove a job's folder or upload (best effort; logged when it fails)."""
    try:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    except OSError as exc:
        log.warning("could not remove %s: %s", path.name, exc)
