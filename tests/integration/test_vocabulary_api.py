"""Caller-chosen attributes over real HTTP: the real server on the tiny checkpoint.

A 38-attribute file serves every result with all 38; a request may ask for a subset or define
its own; shots of one batch may each have their own set; bad files stop start-up naming the file
and key; bad request attributes are a 422 naming the attribute; sessions and /metrics follow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qwen_server.contract.vocabulary import EVIDENCE_CHANNELS, load_vocabulary_file
from tests.conftest import REPO_ROOT, TEST_API_KEY, LiveServer, run_server, test_settings
from tests.payloads import shot

TRAILER_FILE = REPO_ROOT / "examples" / "trailer_attributes.yaml"
TRAILER = load_vocabulary_file(TRAILER_FILE)[0]
SIX = ["suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion"]
# Short captions keep the random-weight model's answers short on the CPU.
FAST = {"model": {"caption_max_chars": 40}, "batching": {"max_wait_ms": 5}}


@pytest.fixture(scope="module")
def trailer_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    settings = test_settings(
        tiny_model_dir,
        tmp_path_factory.mktemp("vocab"),
        analysis={"attributes_file": str(TRAILER_FILE)},
        **FAST,
    )
    with run_server(settings) as live:
        yield live


@pytest.fixture(scope="module")
def six_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    with run_server(test_settings(tiny_model_dir, tmp_path_factory.mktemp("six"), **FAST)) as s:
        yield s


def _batch(server: LiveServer, body: dict) -> httpx.Response:
    with server.client() as c:
        return c.post("/analyze_batch", json=body)


def _check_result(result: dict, names: list[str]) -> None:
    assert list(result["attributes"]) == names
    assert list(result["model_attributes"]) == names
    assert list(result["evidence"]) == names
    assert all(0.0 <= v <= 1.0 for v in result["attributes"].values())
    assert all(0.0 <= v <= 1.0 for v in result["model_attributes"].values())
    assert result["fallback"] == [], "the grammar makes every answer complete"


def test_a_38_attribute_file_gives_every_result_all_38(trailer_server: LiveServer) -> None:
    r = _batch(trailer_server, {"shots": [shot(1), shot(2, 2), shot(3, 1)]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["shot_id"] for x in results] == [1, 2, 3]
    for result in results:
        _check_result(result, list(TRAILER.names))
        evidence = result["evidence"]
        assert evidence["humor"] == [] and evidence["romantic_tension"] == []  # model alone
        assert evidence["darkness"] == ["visual:darkness"]
        assert evidence["fear"] == ["visual:suspense", "audio:suspense"]  # declared in the file
        assert evidence["emotional_intensity"] == ["audio:emotional_tension"]
        # Model-only attributes are the model's score, unchanged by fusion.
        assert result["attributes"]["humor"] == pytest.approx(result["model_attributes"]["humor"])


def test_vocabulary_endpoint_lists_the_file_and_needs_the_key(trailer_server: LiveServer) -> None:
    with trailer_server.client() as c:
        body = c.get("/vocabulary").json()
    assert [a["name"] for a in body["attributes"]] == list(TRAILER.names)
    fear = next(a for a in body["attributes"] if a["name"] == "fear")
    assert fear["evidence"] == "suspense" and fear["description"].startswith("fright")
    assert body["evidence_channels"] == EVIDENCE_CHANNELS
    assert body["source"] == "file" and body["max_attributes"] == 64
    with trailer_server.client(key=None) as c:
        assert c.get("/vocabulary").status_code == 401


def test_default_server_keeps_the_six_and_their_fusion(six_server: LiveServer) -> None:
    r = _batch(six_server, {"shots": [shot(1)]})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    _check_result(result, SIX)
    assert result["evidence"] == {
        "suspense": ["visual:suspense", "audio:suspense"],
        "darkness": ["visual:darkness"],
        "ambiguity": ["visual:ambiguity"],
        "emotional_tension": ["audio:emotional_tension"],
        "intensity": ["visual:intensity", "audio:intensity"],
        "motion": ["visual:motion"],
    }
    with six_server.client() as c:
        assert c.get("/vocabulary").json()["source"] == "default"


def test_a_request_asks_for_a_subset_and_ad_hoc_attributes(six_server: LiveServer) -> None:
    wanted = [
        "motion",
        {"name": "humor", "description": "how funny the shot is"},
        {"name": "warmth", "description": "warm light and mood", "evidence": "brightness"},
        {"name": "suspense", "description": "my own wording", "evidence": None},
    ]
    r = _batch(six_server, {"shots": [shot(1), shot(2)], "attributes": wanted})
    assert r.status_code == 200, r.text
    for result in r.json()["results"]:
        _check_result(result, ["motion", "humor", "warmth", "suspense"])
        assert result["evidence"] == {
            "motion": ["visual:motion"],
            "humor": [],
            "warmth": ["visual:brightness"],
            "suspense": [],  # evidence: null turns the known attribute's fusion off
        }
    # /analyze takes the same field on the shot.
    with six_server.client() as c:
        one = c.post("/analyze", json=shot(7, 1, attributes=["darkness"]))
    assert one.status_code == 200, one.text
    _check_result(one.json(), ["darkness"])


def test_a_batch_mixing_vocabularies_gives_each_shot_its_own_set(
    trailer_server: LiveServer,
) -> None:
    humor = {"name": "laughs", "description": "people laughing"}
    body = {
        "attributes": ["humor", "suspense"],  # for shots without their own
        "shots": [
            shot(1),
            shot(2, attributes=["decay", "magic", "fear"]),
            shot(3, attributes=[humor]),
            shot(4),
        ],
    }
    r = _batch(trailer_server, body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    default = ["humor", "suspense"]
    expected = [default, ["decay", "magic", "fear"], ["laughs"], default]
    for result, names in zip(results, expected, strict=True):
        _check_result(result, names)
        assert result["generation"]["batch_size"] == 4, "one generate call, per-row grammars"


@pytest.mark.parametrize(
    ("attributes", "where", "words"),
    [
        (["suspense", "nope"], "attributes[1]", "'nope' is not in this server's vocabulary"),
        (["Humor"], "attributes[0]", "invalid attribute name 'Humor'"),
        (["suspense", "suspense"], "attributes", "listed twice"),
        ([f"a{i}" for i in range(65)], "attributes", "64"),
        ([{"name": "x", "description": "y" * 301}], "attributes[0]", "at most 300"),
        ([{"name": "humor"}], "attributes[0]", "give a description"),
        ([{"name": "x", "description": "d", "evidence": "smell"}], "attributes[0]", "smell"),
        ([{"name": "x", "description": "d", "extra": 1}], "attributes[0]", "keys ['extra']"),
        ([], "attributes", "at least 1"),
        ([{"name": "x", "description": "   "}], "attributes[0]", "description is empty"),
    ],
)
def test_bad_request_attributes_are_a_422_naming_the_attribute(
    six_server: LiveServer, attributes: list, where: str, words: str
) -> None:
    r = _batch(six_server, {"shots": [shot(1, 1)], "attributes": attributes})
    assert r.status_code == 422, r.text
    assert where in r.text and words in r.text, r.text
    # Per shot, the message names the shot too.
    r = _batch(six_server, {"shots": [shot(5, 1), shot(6, 1, attributes=["nope"])]})
    assert r.status_code == 422 and "shot 6" in r.text and "'nope'" in r.text, r.text


def test_sessions_keep_each_shots_own_attributes(trailer_server: LiveServer) -> None:
    sid = "vocab-mix"
    assert _batch(trailer_server, {"session_id": sid, "shots": [shot(1), shot(2)]}).is_success
    again = {"session_id": sid, "shots": [shot(2)], "attributes": ["humor", "decay"]}
    assert _batch(trailer_server, again).is_success  # shot 2 re-analysed with another set
    with trailer_server.client() as c:
        session = c.get(f"/sessions/{sid}").json()
    by_id = {s["shot_id"]: s for s in session["shots"]}
    assert list(by_id[1]["attributes"]) == list(TRAILER.names)
    assert list(by_id[2]["attributes"]) == ["humor", "decay"]  # replaced whole, not merged
    assert session["attributes"] == list(TRAILER.names)


def test_metrics_series_do_not_grow_with_request_attributes(six_server: LiveServer) -> None:
    def series() -> set[str]:
        with six_server.client() as c:
            text = c.get("/metrics").text
        return {line.split(" ")[0] for line in text.splitlines() if line.startswith("qwen_")}

    before = series()
    adhoc = [{"name": f"made_up_{i}", "description": "anything"} for i in range(20)]
    assert _batch(six_server, {"shots": [shot(1, 1)], "attributes": adhoc}).is_success
    after = series()
    assert {s for s in after if "fallback" in s} == {s for s in before if "fallback" in s}
    assert 'qwen_fallback_fields_total{field="other"}' in after


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QWEN_SERVER_API_KEYS": TEST_API_KEY}
    return subprocess.run(
        [sys.executable, "-m", "qwen_server", "--check-config", "--attributes-file", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('attributes:\n  humor: "a"\n  humor: "b"\n', "key 'humor' written twice"),
        ('attributes:\n  Humor: "funny"\n', "attributes.Humor: invalid attribute name"),
        ("attributes:\n  humor: ''\n", "attributes.humor: description is empty"),
        ('attributes:\n  humor: {description: "x", evidence: smell}\n', "unknown evidence"),
        ('attributes:\n  humor: {text: "x"}\n', "attributes.humor: unknown keys ['text']"),
        ("attributes: {}\n", "no attributes"),
        ("prompts: {}\n", "has no 'attributes' key"),
        ("attributes: [\n", "is not valid YAML at line 2"),
        ("attributes:\n" + "".join(f"  a{i}: d\n" for i in range(65)), "65 attributes"),
        (f'attributes:\n  humor: "{"x" * 301}"\n', "at most 300"),
    ],
)
def test_a_bad_file_stops_start_up_naming_file_and_key(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "vocab.yaml"
    path.write_text(text)
    done = _check_config(path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(path) in done.stderr and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_pipelines_file_loads_unchanged(tmp_path: Path) -> None:
    done = _check_config(TRAILER_FILE)
    assert done.returncode == 0, done.stderr
