"""``qwen-client submit`` / ``jobs`` without a server: the job options taken from analyze's
flags (and the flags a job refuses), the output-folder check, and unpacking a results tar
safely (real archives written with tarfile: traversal, absolute names, links, devices)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from client.api.jobs import UnsafeArchive, unpack_results
from client.cli.job_follow import clock, status_line
from client.cli.main import build_parser
from client.cli.main import run as cli_run
from client.cli.submit import check_out, job_options
from client.errors import EXIT_USAGE, OutputConflict, UsageError


def _args(*argv: str):
    return build_parser().parse_args(
        ["submit", "film.mp4", "--server", "http://127.0.0.1:9", *argv]
    )


def test_defaults_are_analyzes() -> None:
    assert job_options(_args()) == {
        "detector": "adaptive",
        "threshold": None,
        "min_shot_seconds": 0.6,
        "frames_per_shot": 5,
        "audio": True,
        "transitions": True,
    }


def test_extraction_flags_map_onto_job_options() -> None:
    args = _args(
        "--detector", "content", "--threshold", "30", "--min-shot-len", "1.5",
        "--frames-per-shot", "3", "--no-audio", "--no-transitions",
        "--attributes", "suspense,motion", "--session", "sintel", "--title", "Sintel",
    )  # fmt: skip
    assert job_options(args) == {
        "detector": "content",
        "threshold": 30.0,
        "min_shot_seconds": 1.5,
        "frames_per_shot": 3,
        "audio": False,
        "transitions": False,
        "attributes": ["suspense", "motion"],
        "session_id": "sintel",
        "title": "Sintel",
    }


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-side", "224"], "--max-side"),
        (["--start", "10"], "--start"),
        (["--end", "00:01:00", "--jpeg-quality", "70"], "--end, --jpeg-quality"),
        (["--detect-width", "320"], "--detect-width"),
        (["--audio-rate", "16000"], "--audio-rate"),
    ],
)
def test_flags_a_job_cannot_take_are_refused(flags: list[str], named: str) -> None:
    with pytest.raises(UsageError, match="not available for server jobs") as err:
        job_options(_args(*flags))
    assert str(err.value).startswith(named)


def test_a_vocabulary_file_is_refused(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("attributes:\n  menace: a threat is felt\n")
    with pytest.raises(UsageError, match="attribute names"):
        job_options(_args("--attributes", str(vocab)))


def test_output_folder_holding_files_needs_force(tmp_path: Path) -> None:
    check_out(tmp_path / "new", force=False)  # absent: fine
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", force=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "shots.jsonl").write_text("{}\n")
    with pytest.raises(OutputConflict, match="--force"):
        check_out(tmp_path / "full", force=False)
    check_out(tmp_path / "full", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputConflict, match="not a folder"):
        check_out(tmp_path / "file", force=True)


def test_usage_errors_exit_2_before_any_request(capsys) -> None:
    # Port 9 (discard) on loopback: a request would fail as unreachable (3), not 2.
    assert cli_run(["jobs", "show", "--server", "http://127.0.0.1:9"]) == EXIT_USAGE
    assert "needs a job id" in capsys.readouterr().err
    assert cli_run(["submit", "missing.mp4", "-s", "http://127.0.0.1:9"]) == EXIT_USAGE
    assert "film not found" in capsys.readouterr().err
    assert cli_run(["jobs", "-s", "ftp://x"]) == EXIT_USAGE


def test_status_line_and_clock() -> None:
    status = {"state": "analysing", "frames_decoded": 90, "frames_total": 240,
              "shots_found": 5, "shots_analysed": 2, "elapsed_s": 65.4, "eta_s": 3725}  # fmt: skip
    assert status_line(status) == (
        "analysing, 90/240 frames, 2/5 shots analysed, elapsed 1:05, ETA 1:02:05"
    )
    assert clock(None) == "?" and clock(59.6) == "1:00"
    done = {**status, "state": "done", "frames_total": None}
    assert status_line(done) == "done, 90/? frames, 2/5 shots analysed, elapsed 1:05"


# --- unpacking results -----------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"{}\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, None


def test_a_results_archive_unpacks(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("frames")
    folder.type = tarfile.DIRTYPE
    tar = _tar(
        tmp_path / "r.tar",
        [_file("shots.jsonl"), (folder, None), _file("frames/shot00001_f0000012.jpg", b"\xff\xd8")],
    )
    names = unpack_results(tar, tmp_path / "out")
    assert names == ["shots.jsonl", "frames/shot00001_f0000012.jpg"]
    assert (tmp_path / "out" / "frames" / "shot00001_f0000012.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (_file("../escaped.txt"), "unsafe path"),
        (_file("frames/../../escaped.txt"), "unsafe path"),
        (_file("/tmp/escaped-abs.txt"), "unsafe path"),
        (_file("frames\\..\\..\\escaped.txt"), "unsafe path"),
        (_special("link", tarfile.SYMTYPE, "/etc/passwd"), "not a file or folder"),
        (_special("frames", tarfile.SYMTYPE, ".."), "not a file or folder"),
        (_special("hard", tarfile.LNKTYPE, "shots.jsonl"), "not a file or folder"),
        (_special("fifo", tarfile.FIFOTYPE), "not a file or folder"),
        (_special("dev", tarfile.CHRTYPE), "not a file or folder"),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(
    tmp_path: Path, member, needle: str
) -> None:
    tar = _tar(tmp_path / "evil.tar", [_file("shots.jsonl"), member])
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchive, match=needle):
        unpack_results(tar, out)
    assert not (out / "shots.jsonl").exists()  # checked whole before extracting
    assert not list(tmp_path.rglob("escaped*")) and not Path("/tmp/escaped-abs.txt").exists()


def test_a_symlinked_folder_in_the_output_cannot_redirect_a_member(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "frames").symlink_to(outside)
    tar = _tar(tmp_path / "r.tar", [_file("frames/x.jpg")])
    with pytest.raises(UnsafeArchive, match="outside"):
        unpack_results(tar, out)
    assert not list(outside.iterdir())
