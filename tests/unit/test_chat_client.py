"""The pieces of ``qwen-client chat`` that need no server: token, results file, SSE parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.chat import load_results, sse_events
from client.credentials import read_token
from client.errors import EXIT_USAGE, ClientError


def test_token_file_wins_over_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("QWEN_SERVER_TOKEN", "from-env")
    f = tmp_path / "token"
    f.write_text("# comment\n\n  from-file  \n")
    assert read_token(f) == "from-file"
    assert read_token(None) == "from-env"
    monkeypatch.delenv("QWEN_SERVER_TOKEN")
    assert read_token(None) is None


def test_unreadable_or_empty_token_file_is_bad_input(tmp_path: Path):
    with pytest.raises(ClientError) as info:
        read_token(tmp_path / "missing")
    assert info.value.exit_code == EXIT_USAGE
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ClientError, match="holds no token"):
        read_token(empty)


def test_results_file_layouts(tmp_path: Path):
    rows = [
        {
            "shot_id": 0,
            "start": 0.0,
            "end": 2.0,
            "caption": "a",
            "audio_class": "music",
            "attributes": {"suspense": 0.5},
            "frames": ["ignored"],
        },
        {"shot_id": 1, "start_time": 2.0, "end_time": 3.0, "caption": "b", "darkness": 0.9},
        {"shot_id": 2, "error": "decode failed"},  # a failed shot: skipped
    ]
    (tmp_path / "shots.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    shots = load_results(tmp_path)
    assert shots == [
        {
            "shot_id": 0,
            "start_time": 0.0,
            "end_time": 2.0,
            "caption": "a",
            "attributes": {"suspense": 0.5},
            "audio_class": "music",
        },
        {
            "shot_id": 1,
            "start_time": 2.0,
            "end_time": 3.0,
            "caption": "b",
            "attributes": {"darkness": 0.9},
            "audio_class": None,
        },
    ]
    assert load_results(tmp_path / "shots.jsonl") == shots  # the file itself works too


def test_results_keep_every_numeric_attribute(tmp_path: Path):
    """Any vocabulary is sent as it is; what the server could not take as a score is dropped."""
    scores = {"humor": 0.9, "romantic_tension": 1, "suspense": 0.25, "x9": 0.0}
    junk = {"note": "funny", "flag": True, "missing": None, "huge": 10**400, "nan": float("nan")}
    row = {"shot_id": 5, "start": 1.0, "caption": "a clown", "attributes": {**scores, **junk}}
    flat = {"shot_id": 6, "caption": "b", "motion": 0.5, "humor": 0.7}  # flat: the six only
    (tmp_path / "shots.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(flat) + "\n")
    shots = load_results(tmp_path)
    assert shots[0]["attributes"] == scores
    assert list(shots[0]["attributes"]) == list(scores)  # the record's order
    assert shots[1]["attributes"] == {"motion": 0.5}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"shot_id": 1, "caption": "a"}\nnot json\n', "line 2: not valid JSON"),
        ('{"caption": "a"}\n', "line 1: no integer shot_id"),
        ('{"shot_id": 1, "error": "x"}\n', "no analysed shots"),
    ],
)
def test_bad_results_files(tmp_path: Path, content: str, message: str):
    (tmp_path / "shots.jsonl").write_text(content)
    with pytest.raises(ClientError, match=message) as info:
        load_results(tmp_path)
    assert info.value.exit_code == EXIT_USAGE


def test_missing_results_file_names_the_analyze_command(tmp_path: Path):
    with pytest.raises(ClientError, match="qwen-client analyze"):
        load_results(tmp_path)


def test_sse_parsing():
    lines = [
        ": keep-alive",
        'data: {"delta": "a"}',
        "",
        "event: error",
        'data: {"status": 504}',
        "",
        "data:no-space",
    ]
    assert list(sse_events(iter(lines))) == [
        ("message", '{"delta": "a"}'),
        ("error", '{"status": 504}'),
        ("message", "no-space"),
    ]
