"""HTTP client of a server's film jobs (``/jobs``): submit, status, list, cancel, follow the
Server-Sent Events, download the results tar and unpack it safely.

Uploads are streamed: httpx reads the film's file object in 64 KiB chunks while it sends the
multipart body (``_CountingFile`` reports the bytes to a progress callback as they are read),
and the body's length is known from the file's size, so the server checks its limits and quota
before it stores a byte. There is no upload resume: the server's ``POST /jobs`` has no partial
upload state to continue (a broken upload is removed at once), so an interrupted upload is sent
again; ``--on-server-path`` avoids the upload altogether when the server can read the film.

The results tar is written to a temporary file beside the output folder, then every member is
checked before anything is extracted: only regular files and folders, relative names without
``..``, nothing outside the folder (``safe_members``). Errors are ``ClientError``s with the
server's ``detail``; the token is sent as a bearer header and never printed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import httpx

from client.api.bodies import error_detail
from client.chat import sse_events
from client.credentials import TOKEN_ENV
from client.errors import (
    EXIT_UNREACHABLE,
    AuthFailed,
    ClientError,
    RequestRejected,
    ServerProtocolError,
    ServerUnreachable,
)

log = logging.getLogger("client.api.jobs")

FINISHED = frozenset({"done", "failed", "cancelled"})
DOWNLOAD_CHUNK = 1024 * 1024


class JobFailed(ClientError):
    """The job ended failed or cancelled: its results are not complete."""

    exit_code = EXIT_UNREACHABLE


class UnsafeArchive(ServerProtocolError):
    """The results tar holds a member that would land outside the output folder, or one
    that is not a plain file or folder (a link, a device)."""


class _CountingFile:
    """A binary file whose reads are reported to ``on_read(bytes_read)``; httpx's multipart
    body reads it chunk by chunk (and learns its length from ``fileno``)."""

    def __init__(self, handle: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if chunk:
            self._on_read(len(chunk))
        return chunk

    def fileno(self) -> int:
        return self._handle.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = error_detail(response)
    if status == 401:
        raise AuthFailed(
            f"authentication failed (HTTP 401): {detail}; check ${TOKEN_ENV} or --token-file"
        )
    if status < 500:
        raise RequestRejected(f"{what}: HTTP {status}: {detail}")
    raise ServerUnreachable(f"{what}: the server failed (HTTP {status}): {detail}")


def safe_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member of ``archive``, checked: regular files and folders only, with relative
    names that stay inside the folder they are extracted to (UnsafeArchive otherwise)."""
    members = []
    for member in archive.getmembers():
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or "\\" in member.name or not name.parts:
            raise UnsafeArchive(f"the results archive holds an unsafe path: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchive(
                f"the results archive holds {member.name!r}, which is not a file or folder"
            )
        members.append(member)
    return members


def unpack_results(tar_path: Path, out: Path) -> list[str]:
    """Extract the checked results ``tar_path`` into ``out`` (created; its files are replaced
    by the archive's) and return the names of the files written."""
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    with tarfile.open(tar_path, mode="r:") as archive:
        members = safe_members(archive)
        for member in members:
            target = (root / member.name).resolve()
            if target != root and root not in target.parents:  # a folder symlink already there
                raise UnsafeArchive(f"{member.name!r} would be written outside {out}")
        # The "data" filter (Python >= 3.11.4) repeats the checks and drops modes and owners.
        archive.extractall(root, members=members, filter="data")
    return [m.name for m in members if m.isfile()]


class JobsClient:
    """One server's ``/jobs`` API (``server``: a checked base URL without a trailing slash)."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.server = server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=server,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, what: str, **kw: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(
                f"{what}: no answer from {self.server} ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"{what}: cannot reach the server at {self.server} ({type(exc).__name__})"
            ) from None
        _raise_for_status(response, what)
        try:
            body = response.json()
        except ValueError:
            raise ServerProtocolError(
                f"{what}: {self.server} sent a body that is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise ServerProtocolError(f"{what}: {self.server} sent JSON that is not an object")
        return body

    def submit_upload(
        self, film: Path, options: dict[str, Any], on_sent: Callable[[int], None]
    ) -> dict[str, Any]:
        """POST the film as a streamed multipart upload (``on_sent(n)`` after each chunk read)
        with ``options``; the 202 answer (job_id, session_id, urls)."""
        with film.open("rb") as handle:
            files = {
                "file": (film.name, _CountingFile(handle, on_sent), "application/octet-stream")
            }
            # No read timeout while the server stores and probes a large upload.
            return self._call(
                "POST",
                "/jobs",
                "the upload",
                files=files,
                data={"options": json.dumps(options)},
                timeout=httpx.Timeout(None, connect=self._client.timeout.connect),
            )

    def submit_path(self, path: str, options: dict[str, Any]) -> dict[str, Any]:
        """POST a job for a film the server reads under its ``jobs.media_roots``."""
        return self._call("POST", "/jobs", "the job", json={"path": path, **options})

    def status(self, job_id: str) -> dict[str, Any]:
        """GET /jobs/{id}."""
        return self._call("GET", f"/jobs/{job_id}", f"job {job_id}")

    def page(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """GET /jobs: ``{"jobs": [...], "total", "limit", "offset"}``, newest first."""
        return self._call("GET", "/jobs", "the job list", params={"limit": limit, "offset": offset})

    def cancel(self, job_id: str) -> dict[str, Any]:
        """DELETE /jobs/{id}: the job's status, state cancelled (409 when already finished)."""
        return self._call("DELETE", f"/jobs/{job_id}", f"cancelling job {job_id}")

    def events(self, job_id: str, *, idle_timeout: float = 60.0) -> Iterator[tuple[str, dict]]:
        """(event, status) of ``GET /jobs/{id}/events`` until its ``end`` event (included).

        The server sends a status at least once a second, so ``idle_timeout`` without a byte
        means the connection is dead (ServerUnreachable)."""
        what = f"following job {job_id}"
        timeout = httpx.Timeout(idle_timeout, connect=self._client.timeout.connect)
        try:
            with self._client.stream("GET", f"/jobs/{job_id}/events", timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response, what)
                for event, data in sse_events(response.iter_lines()):
                    try:
                        status = json.loads(data)
                    except ValueError:
                        raise ServerProtocolError(f"{what}: malformed event data") from None
                    yield event, status
                    if event == "end":
                        return
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"{what}: the event stream from {self.server} broke ({type(exc).__name__})"
            ) from None
        raise ServerUnreachable(f"{what}: the event stream ended before the job did")

    def download_results(
        self,
        job_id: str,
        out: Path,
        *,
        partial: bool = False,
        on_received: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Download ``/jobs/{id}/results`` and unpack it into ``out``; the files' names.

        The tar goes to a temporary file beside ``out`` (never whole in memory), is checked
        member by member, then extracted; the temporary file is removed either way."""
        what = f"downloading job {job_id}'s results"
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=out.parent, prefix=f".{out.name}.", suffix=".tar.part"
        ) as tmp:
            params = {"partial": "1"} if partial else None
            try:
                with self._client.stream(
                    "GET", f"/jobs/{job_id}/results", params=params
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        _raise_for_status(response, what)
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                        tmp.write(chunk)
                        if on_received is not None:
                            on_received(len(chunk))
            except httpx.TransportError as exc:
                raise ServerUnreachable(f"{what}: {type(exc).__name__}") from None
            tmp.flush()
            try:
                return unpack_results(Path(tmp.name), out)
            except tarfile.TarError as exc:
                raise ServerProtocolError(f"{what}: not a valid tar archive ({exc})") from None


def move_into(staging: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``staging`` folder (same file system: a rename)."""
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
