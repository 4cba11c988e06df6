"""``qwen-client analyze --attributes`` as a user runs it: real subprocesses, a generated film,
real HTTP on loopback to ``tests/fake_analysis_server.py`` (which scores exactly the requested
attributes and refuses names it does not know, like the real server).

Covers the 38-attribute trailer vocabulary end to end (request, shots.jsonl, shots.csv,
summary.json, run.json), a list of names, a server's own vocabulary without --attributes,
resuming with another vocabulary (refused; --force starts over) and the one-line errors of a bad
name, a bad file, an unknown name and a server that leaves attributes out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen_server.contract.vocabulary import load_vocabulary_file
from tests.e2e.test_cli_client import cli, one_line_error
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import FilmTruth, ShotSpec, make_film

REPO = Path(__file__).resolve().parents[2]
TRAILER_FILE = REPO / "examples" / "trailer_attributes.yaml"
TRAILER = load_vocabulary_file(TRAILER_FILE)[0]
TOKEN = "e2e-token"  # the one ``cli`` sends


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    specs = [
        ShotSpec(frames=20, brightness=0.8, pattern="bars", audio="tone"),
        ShotSpec(frames=20, brightness=0.2, pattern="checker", audio="noise"),
        ShotSpec(frames=20, brightness=0.5, pattern="circles", audio="silence"),
    ]
    return make_film(tmp_path_factory.mktemp("attrs") / "film.mp4", specs, size=(160, 120))


@pytest.fixture
def server() -> Iterator[FakeAnalysisServer]:
    with FakeAnalysisServer(token=TOKEN) as s:
        yield s


def _analyze(film: FilmTruth, url: str, out: Path, *extra: str):
    return cli("analyze", str(film.path), "-s", url, "--out", str(out), "-q", *extra)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]


def _csv_attribute_columns(out: Path) -> list[str]:
    header = next(csv.reader(io.StringIO((out / "shots.csv").read_text())))
    return header[header.index("audio_class") + 1 : header.index("rms_energy_mean")]


def test_trailer_vocabulary_end_to_end_and_resume_with_another_one(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    out = tmp_path / "trailer"
    proc = _analyze(film, server.url, out, "--attributes", str(TRAILER_FILE))
    assert proc.returncode == 0, proc.stderr
    n = len(film.shots)
    # Sent as definitions, so a server that knows none of them can score them.
    sent = server.recorded.attributes
    assert sent and all(s == TRAILER.describe() for s in sent)
    records = _records(out)
    assert [r["shot_id"] for r in records] == list(range(1, n + 1))
    for r in records:
        assert tuple(r["attributes"]) == TRAILER.names  # all 38, in the file's order
        assert all(0.0 <= v <= 1.0 for v in r["attributes"].values())
    assert tuple(_csv_attribute_columns(out)) == TRAILER.names
    rows = list(csv.DictReader(io.StringIO((out / "shots.csv").read_text())))
    assert float(rows[1]["romantic_tension"]) == records[1]["attributes"]["romantic_tension"]
    summary = json.loads((out / "summary.json").read_text())
    assert tuple(summary["attributes"]) == TRAILER.names
    assert all(len(a["top_shots"]) == n for a in summary["attributes"].values())
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["settings"]["attributes"] == TRAILER.describe()
    assert summary["settings"]["attributes"] == TRAILER.describe()

    # Another vocabulary in the same folder is refused, naming what changed; nothing is sent.
    before = server.requests
    other = _analyze(film, server.url, out, "--attributes", "suspense,motion")
    assert other.returncode == 2
    error = one_line_error(other)
    assert "different film or settings" in error and "settings.attributes (38 attributes" in error
    assert server.requests == before
    # Leaving --attributes out is another vocabulary too (the server's).
    default = _analyze(film, server.url, out)
    assert default.returncode == 2 and "the server's vocabulary" in one_line_error(default)
    # --force starts over with the new vocabulary.
    forced = _analyze(film, server.url, out, "--attributes", "motion,suspense", "--force")
    assert forced.returncode == 0, forced.stderr
    assert server.recorded.attributes[-1] == ["motion", "suspense"]
    assert all(list(r["attributes"]) == ["motion", "suspense"] for r in _records(out))
    assert _csv_attribute_columns(out) == ["motion", "suspense"]
    assert list(json.loads((out / "summary.json").read_text())["attributes"]) == [
        "motion",
        "suspense",
    ]
    # The same vocabulary again resumes (here: finds the run complete).
    again = _analyze(film, server.url, out, "--attributes", "motion,suspense")
    assert again.returncode == 0 and "already complete" in again.stdout


def test_without_attributes_the_servers_vocabulary_sets_the_columns(
    film: FilmTruth, tmp_path: Path
) -> None:
    with FakeAnalysisServer(token=TOKEN, vocabulary=TRAILER) as server:
        proc = _analyze(film, server.url, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.recorded.attributes == [None]  # nothing asked: the server's whole one
    assert tuple(_csv_attribute_columns(tmp_path)) == TRAILER.names
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["attributes"] is None


def test_an_unknown_name_ends_the_run_with_the_name(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    proc = _analyze(film, server.url, tmp_path, "--attributes", "suspense,nope_x")
    assert proc.returncode == 5
    error = one_line_error(proc)
    assert "refused the requested attribute 'nope_x'" in error and "attributes[1]" in error
    assert server.requests == 1  # one batch of 3 shots, not retried
    assert not (tmp_path / "shots.jsonl").exists() or _records(tmp_path) == []


def test_a_server_leaving_out_an_attribute_is_a_protocol_error(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    server.behaviour.omit_attribute = "motion"
    proc = _analyze(film, server.url, tmp_path, "--attributes", "suspense,motion")
    assert proc.returncode == 1
    error = one_line_error(proc)
    assert "result for shot 1 lacks the requested attributes motion" in error


def test_bad_names_and_files_fail_before_decoding(
    film: FilmTruth, server: FakeAnalysisServer, tmp_path: Path
) -> None:
    bad_name = _analyze(film, server.url, tmp_path / "a", "--attributes", "suspense,Nope")
    assert bad_name.returncode == 2
    assert "--attributes: invalid attribute name 'Nope'" in one_line_error(bad_name)
    vocab = tmp_path / "v.yaml"
    vocab.write_text(
        'attributes:\n  humor: "funny"\n  fear:\n    description: x\n    evidence: 7\n'
    )
    bad_file = _analyze(film, server.url, tmp_path / "b", "--attributes", str(vocab))
    assert bad_file.returncode == 2
    assert f"{vocab}: attributes.fear: unknown evidence 7" in one_line_error(bad_file)
    missing = _analyze(film, server.url, tmp_path / "c", "--attributes", "nope.yaml")
    assert missing.returncode == 2 and "nope.yaml: cannot be read" in one_line_error(missing)
    assert server.requests == 0
    assert not any((tmp_path / d).exists() for d in "abc")
