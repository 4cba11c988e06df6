"""The parts of ``qwen_server.jobs`` that need no server: the streaming multipart reader, the
media-root checks, the results tar, the SSE stream, and JobOptions against the CLI's flags."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest

from client.cli.main import build_parser
from client.cli.options import extract_options_from_args
from qwen_server.errors import Forbidden, InvalidInput
from qwen_server.jobs.events import job_events
from qwen_server.jobs.intake import resolve_media_path, safe_file_name
from qwen_server.jobs.models import JobOptions, JobSource, JobStatus
from qwen_server.jobs.multipart import MultipartReader, PartData, PartEnd, PartStart, boundary_of
from qwen_server.jobs.results_tar import tar_stream

BOUNDARY = "----qwenBoundary7MA4YWxk"


def _body(payload: bytes, options: dict | None) -> bytes:
    parts = []
    if options is not None:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="options"\r\n\r\n'.encode()
            + json.dumps(options).encode()
        )
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="my film.mp4"'
        "\r\nContent-Type: video/mp4\r\n\r\n".encode()
        + payload
    )
    return b"preamble\r\n" + b"\r\n".join(parts) + f"\r\n--{BOUNDARY}--\r\n".encode()


def _read(body: bytes, step: int) -> tuple[dict[str, bytes], dict[str, str | None]]:
    reader = MultipartReader(boundary_of(f"multipart/form-data; boundary={BOUNDARY}"))
    fields: dict[str, bytearray] = {}
    names: dict[str, str | None] = {}
    current = None
    ended = 0
    chunks = [body[i : i + step] for i in range(0, len(body), step)] + [b""]
    for chunk in chunks:
        for event in reader.feed(chunk):
            if isinstance(event, PartStart):
                current = event.name
                fields[current] = bytearray()
                names[current] = event.filename
            elif isinstance(event, PartData):
                fields[current] += event.data  # type: ignore[index]
            elif isinstance(event, PartEnd):
                ended += 1
    assert ended == len(fields) and reader.done
    return {k: bytes(v) for k, v in fields.items()}, names


@pytest.mark.parametrize("step", [1, 3, 17, 64, 4096, 10**6])
def test_multipart_reader_gives_the_same_bytes_whatever_the_chunking(step: int) -> None:
    # Content that looks like the start of a delimiter must pass through untouched.
    payload = bytes(range(256)) * 20 + f"\r\n--{BOUNDARY[:-3]}\r\n--".encode() + b"\r\n" * 3
    fields, names = _read(_body(payload, {"title": "T"}), step)
    assert fields["file"] == payload and names["file"] == "my film.mp4"
    assert json.loads(fields["options"]) == {"title": "T"}


def test_multipart_reader_refuses_a_truncated_body() -> None:
    body = _body(b"x" * 1000, None)[:-30]
    reader = MultipartReader(BOUNDARY.encode())
    reader.feed(body)
    with pytest.raises(InvalidInput, match="ended before"):
        reader.feed(b"")


def test_boundary_is_required() -> None:
    with pytest.raises(InvalidInput):
        boundary_of("application/octet-stream")
    with pytest.raises(InvalidInput, match="boundary"):
        boundary_of("multipart/form-data")


def test_safe_file_names() -> None:
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("C:\\films\\a b.mkv") == "a b.mkv"
    assert safe_file_name("..") == "film" and safe_file_name(None) == "film"
    assert safe_file_name("é;$(x).mp4") == "_x_.mp4"


def test_media_roots_follow_symlinks_and_refuse_escapes(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "sub" / "a.mp4").write_bytes(b"a")
    (elsewhere / "b.mp4").write_bytes(b"b")
    (root / "inside.mp4").symlink_to(root / "sub" / "a.mp4")
    (root / "out.mp4").symlink_to(elsewhere / "b.mp4")
    (root / "outdir").symlink_to(elsewhere)
    roots = [root]
    assert resolve_media_path("sub/a.mp4", roots) == (root / "sub" / "a.mp4").resolve()
    assert resolve_media_path("inside.mp4", roots) == (root / "sub" / "a.mp4").resolve()
    assert resolve_media_path(str(root / "sub" / "a.mp4"), roots).name == "a.mp4"
    for bad in ("../elsewhere/b.mp4", "out.mp4", "outdir/b.mp4", str(elsewhere / "b.mp4")):
        with pytest.raises(Forbidden):
            resolve_media_path(bad, roots)
    with pytest.raises(Forbidden):  # outside and missing: 403 too, saying nothing more
        resolve_media_path("../nothing.mp4", roots)
    with pytest.raises(InvalidInput, match="not found"):
        resolve_media_path("sub/missing.mp4", roots)
    with pytest.raises(InvalidInput, match="not found"):
        resolve_media_path("sub", roots)  # a folder is not a film
    with pytest.raises(Forbidden, match="media_roots is empty"):
        resolve_media_path("sub/a.mp4", [])


def test_results_tar_holds_the_folder_and_skips_symlinks(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    (folder / "frames").mkdir(parents=True)
    (folder / "shots.jsonl").write_text('{"shot_id": 1}\n')
    (folder / "frames" / "shot00001_f0000002.jpg").write_bytes(bytes(range(256)) * 5)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "link").symlink_to("/etc/passwd")
    data = b"".join(tar_stream(folder))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(tar.getnames())
        assert names == ["empty.txt", "frames", "frames/shot00001_f0000002.jpg", "shots.jsonl"]
        jpg = tar.extractfile("frames/shot00001_f0000002.jpg")
        assert jpg is not None and jpg.read() == bytes(range(256)) * 5


def _status(state: str) -> JobStatus:
    return JobStatus(
        job_id="abc",
        state=state,  # type: ignore[arg-type]
        source=JobSource(kind="path", name="f.mp4"),
        session_id="job-abc",
        title=None,
        options={},
        created_at="2026-01-01T00:00:00.000Z",
    )


def test_events_end_at_once_for_a_finished_job() -> None:
    async def read() -> JobStatus:
        return _status("done")

    async def collect() -> list[bytes]:
        return [m async for m in job_events(read, lambda: False)]

    messages = asyncio.run(collect())
    assert len(messages) == 1 and messages[0].startswith(b"id: 1\nevent: end\ndata: {")


def test_events_keep_beating_while_nothing_changes() -> None:
    async def read() -> JobStatus:
        return _status("queued")

    async def first(n: int) -> list[bytes]:
        stream = job_events(read, lambda: False)
        out = [await anext(stream) for _ in range(n)]
        await stream.aclose()
        return out

    messages = asyncio.run(first(3))
    assert [m.split(b"\n")[:2] for m in messages] == [
        [f"id: {i}".encode(), b"event: status"] for i in (1, 2, 3)
    ]


def test_events_stop_when_the_server_drains() -> None:
    async def read() -> JobStatus:
        return _status("decoding")

    async def collect() -> list[bytes]:
        return [m async for m in job_events(read, lambda: True)]

    assert len(asyncio.run(collect())) == 1


def test_job_options_defaults_are_the_analyze_cli_defaults() -> None:
    args = build_parser().parse_args(["analyze", "f.mp4", "-s", "http://x", "-o", "out"])
    cli = extract_options_from_args(args)
    assert JobOptions().extract_options().output_settings() == cli.output_settings()
    args = build_parser().parse_args(
        ["analyze", "f.mp4", "-s", "http://x", "-o", "out", "--detector", "content"]
        + ["--threshold", "20", "--min-shot-len", "1.5", "--frames-per-shot", "7"]
        + ["--no-audio", "--no-transitions"]
    )
    options = JobOptions(
        detector="content",
        threshold=20,
        min_shot_seconds=1.5,
        frames_per_shot=7,
        audio=False,
        transitions=False,
    )
    assert options.extract_options().output_settings() == (
        extract_options_from_args(args).output_settings()
    )


def test_job_options_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        JobOptions.model_validate({"detectr": "content"})
