"""CLI help, argument checks and one-line errors with their exit codes (in-process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from client.cli import build_parser, run
from client.credentials import read_token


@pytest.mark.parametrize("command", [[], ["analyze"], ["shots"], ["health"], ["chat"]])
def test_every_command_has_help_with_examples(
    command: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        run([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "qwen-client" in out


def test_top_level_help_documents_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run(["--help"])
    out = capsys.readouterr().out
    for code in ("0 ", "2 ", "3 ", "4 ", "130"):
        assert code in out


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_missing_film(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["shots", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "film not found" in _one_line_error(capsys)


def test_not_a_video(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a film\n" * 50)
    assert run(["shots", str(bogus), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "cannot open notes.mp4 as a video" in _one_line_error(capsys)


def test_audio_only_file_has_no_video_stream(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "voice.flac"
    with av.open(str(path), "w") as c:
        s = c.add_stream("flac", rate=16000)
        s.layout = "mono"
        s.format = "s16"
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 16000), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    assert run(["shots", str(path), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "has no video stream" in _one_line_error(capsys)


def test_a_still_image_is_not_a_video(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    path = tmp_path / "poster.jpg"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path)
    assert run(["shots", str(path), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "still image" in _one_line_error(capsys)


def test_bad_server_url_and_token_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    film = tmp_path / "f.mp4"
    film.write_bytes(b"")
    assert run(["analyze", str(film), "-s", "gpu1:8000", "--out", str(tmp_path / "o")]) == 2
    assert "must start with http" in _one_line_error(capsys)
    missing = tmp_path / "token"
    code = run(
        [
            "analyze",
            str(film),
            "-s",
            "http://x:1",
            "--token-file",
            str(missing),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "cannot read the token file" in _one_line_error(capsys)


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.setenv("QWEN_SERVER_TOKEN", "from-env")
    args = parser.parse_args(["health", "-s", "http://x:1"])
    assert read_token(args.token_file) == "from-env"
    f = tmp_path / "key"
    f.write_text("# comment\n\n  from-file  \nsecond\n")
    args = parser.parse_args(["health", "-s", "http://x:1", "--token-file", str(f)])
    assert read_token(args.token_file) == "from-file"  # the file wins over the environment
    monkeypatch.delenv("QWEN_SERVER_TOKEN")
    assert read_token(parser.parse_args(["health", "-s", "http://x:1"]).token_file) is None


def test_bad_option_values_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = run(["shots", "x.mp4", "--out", str(tmp_path), "--jpeg-quality", "0"])
    assert code == 2 and "jpeg_quality" in _one_line_error(capsys)


def test_client_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys, client.cli, client.pipeline.run, client.api, client.media.scan;"
        "import client.media.audio, client.media.features;"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
