"""Caller-chosen attributes on the client side, without a server: ``--attributes`` parsing,
the request's wire form, answer checks and refusals, and the final files over 38 attributes."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import httpx
import pytest

from client.api.bodies import batch_body
from client.api.responses import parse_batch_answer, rejection
from client.cli import build_parser, run
from client.cli.vocabulary_option import attributes_from_args
from client.errors import OutputConflict, ServerProtocolError, UsageError
from client.options import AttributeRequest
from client.outputs import OutputDir, attribute_columns, shots_csv, summarize
from qwen_server.contract.analysis import AnalyzeBatchRequest
from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.contract.vocabulary import DEFAULT_VOCABULARY, load_vocabulary_file

REPO = Path(__file__).resolve().parents[2]
TRAILER = REPO / "examples" / "trailer_attributes.yaml"
TRAILER_NAMES = load_vocabulary_file(TRAILER)[0].names


def _args(value: str | None) -> argparse.Namespace:
    return argparse.Namespace(attributes=value)


def _parsed(*extra: str) -> AttributeRequest | None:
    args = build_parser().parse_args(["analyze", "f.mp4", "-s", "http://x:1", "-o", "o", *extra])
    return attributes_from_args(args)


# --- parsing --attributes ------------------------------------------------------------------


def test_no_option_means_the_servers_vocabulary() -> None:
    assert _parsed() is None


def test_names_are_sent_as_strings_in_their_order() -> None:
    request = _parsed("--attributes", " motion, suspense ,darkness")
    assert request is not None and request.names == ("motion", "suspense", "darkness")
    assert request.request_items() == ["motion", "suspense", "darkness"]
    assert request.output_setting() == ["motion", "suspense", "darkness"]


def test_a_vocabulary_file_is_sent_as_definitions() -> None:
    request = attributes_from_args(_args(str(TRAILER)))
    assert request is not None and len(request.names) == 38 and request.names == TRAILER_NAMES
    items = request.request_items()
    assert all(set(i) == {"name", "description", "evidence"} for i in items)
    by_name = {i["name"]: i for i in items}
    assert by_name["fear"]["evidence"] == "suspense"  # mapping form: its own evidence
    assert by_name["darkness"]["evidence"] == "darkness"  # a channel name fuses with it
    assert by_name["humor"]["evidence"] is None  # sent as null: model-only, explicitly
    # The body is what the server's contract accepts.
    body = batch_body([{"shot_id": 1, "images": ["eA=="]}], "s", "t", items)
    parsed = AnalyzeBatchRequest.model_validate(body)
    assert parsed.attributes is not None and len(parsed.attributes) == 38


def test_a_relative_file_path_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("vocab").write_text('attributes:\n  humor: "funny"\n')  # no suffix, but it exists
    request = attributes_from_args(_args("vocab"))
    assert request is not None and request.specs is not None and request.names == ("humor",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("suspense,Bad", "invalid attribute name 'Bad'"),
        ("suspense,,motion", "empty name"),
        ("suspense,motion,suspense", "'suspense' is listed twice"),
        ("9lives", "invalid attribute name '9lives'"),
        (",".join(f"a{i}" for i in range(65)), "65 attributes (at most 64)"),
    ],
)
def test_bad_names_are_usage_errors(value: str, message: str) -> None:
    with pytest.raises(UsageError, match="--attributes") as exc:
        attributes_from_args(_args(value))
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "attributes:\n  humor:\n    description: funny\n    evidence: smell\n",
            "attributes.humor",
        ),
        ("attributes:\n  Humor: funny\n", "attributes.Humor"),
        ("attributes:\n  humor: ''\n", "attributes.humor"),
        ("genre_profiles: {}\n", "has no 'attributes' key"),
        ("attributes: [a, b\n", "is not valid YAML at line"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as exc:
        attributes_from_args(_args(str(path)))
    assert str(exc.value).startswith(f"--attributes: {path}") and where in str(exc.value)


def test_a_bad_file_fails_before_the_film_is_opened(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "v.yaml"
    bad.write_text("attributes:\n  humor: {evidence: smell}\n")
    film = tmp_path / "missing.mp4"  # opening it would fail with "film not found"
    code = run(
        ["analyze", str(film), "-s", "http://x:1", "-o", str(tmp_path / "o"), "-q"]
        + ["--attributes", str(bad)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{bad}: attributes.humor: missing 'description'" in err
    assert not (tmp_path / "o").exists()


def test_help_documents_the_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run(["analyze", "--help"])
    out = capsys.readouterr().out
    assert "--attributes FILE|NAMES" in out and "trailer_attributes.yaml" in out
    with pytest.raises(SystemExit):
        run(["shots", "--help"])
    assert "--attributes" not in capsys.readouterr().out  # shots scores nothing


# --- answers and refusals ------------------------------------------------------------------


def _answer(*results: dict) -> httpx.Response:
    # Serialised by hand: a server may well send NaN, which httpx's json= refuses to write.
    body = json.dumps({"results": list(results), "model": "m"})
    return httpx.Response(200, content=body.encode(), headers={"content-type": "application/json"})


def _result(shot_id: int, names: tuple[str, ...], value: object = 0.5) -> dict:
    return {"shot_id": shot_id, "caption": "c", "attributes": dict.fromkeys(names, value)}


def test_answers_keep_the_returned_attributes() -> None:
    got = parse_batch_answer(_answer(_result(1, TRAILER_NAMES)), [1], "http://s", TRAILER_NAMES)
    assert tuple(got.results[0]["attributes"]) == TRAILER_NAMES
    # Without a request any names are fine (the server's vocabulary).
    assert parse_batch_answer(_answer(_result(2, ("humor",))), [2], "http://s").model == "m"


def test_an_answer_lacking_requested_attributes_is_a_protocol_error() -> None:
    short = _result(7, TRAILER_NAMES[:-2])
    with pytest.raises(ServerProtocolError) as exc:
        parse_batch_answer(_answer(short), [7], "http://s", TRAILER_NAMES)
    message = str(exc.value)
    assert "shot 7" in message and "rebellion" not in message
    assert "decay, romantic_tension" in message
    extra = _result(8, ("suspense", "humor"))
    with pytest.raises(ServerProtocolError, match="shot 8 .*not requested: humor"):
        parse_batch_answer(_answer(extra), [8], "http://s", ("suspense",))


@pytest.mark.parametrize("value", ["0.5", None, True, float("nan")])
def test_scores_must_be_numbers(value: object) -> None:
    with pytest.raises(ServerProtocolError, match="shot 3 has attributes that are not numbers"):
        parse_batch_answer(_answer(_result(3, ("suspense",), value)), [3], "http://s")
    with pytest.raises(ServerProtocolError, match="shot 4 lacks attributes"):
        parse_batch_answer(_answer({"shot_id": 4, "attributes": {}}), [4], "http://s")


def test_a_422_about_attributes_names_the_attribute() -> None:
    detail = "attributes[1]: 'nope_x' is not in this server's vocabulary (6 attributes, ...)"
    refused = httpx.Response(422, json={"detail": detail})
    error = rejection(refused, [1, 2], "http://s", ("suspense", "nope_x"))
    assert error.exit_code == 5
    assert "refused the requested attribute 'nope_x'" in str(error) and detail in str(error)
    # pydantic's form of a refusal (a definition with an unknown key) is read as well.
    pydantic = httpx.Response(
        422,
        json={"detail": [{"loc": ["body", "attributes", 0, "x"], "msg": "Extra inputs"}]},
    )
    assert "attribute 'humor'" in str(rejection(pydantic, [1], "http://s", ("humor",)))
    other = rejection(httpx.Response(413, json={"detail": "too big"}), [1, 2], "http://s", None)
    assert "rejected a batch of shots 1..2 (HTTP 413: too big)" in str(other)


# --- the final files over 38 attributes --------------------------------------------------


def _record(shot_id: int, names: tuple[str, ...], base: float = 0.0) -> dict:
    return {
        "shot_id": shot_id,
        "start_frame": (shot_id - 1) * 10,
        "end_frame": shot_id * 10 - 1,
        "frame_count": 10,
        "start_time": (shot_id - 1) * 0.4,
        "end_time": shot_id * 0.4,
        "duration": 0.4,
        "start_timecode": f"00:00:0{shot_id}.000",
        "end_timecode": "00:00:00.400",
        "caption": f"shot {shot_id}",
        "attributes": {
            n: round((base + i / 100 + shot_id / 10) % 1, 4) for i, n in enumerate(names)
        },
        "audio_class": "music",
        "model": "m",
        "audio_features": {"rms_energy_mean": 0.1, "tempo": None},
    }


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_and_summary_carry_all_38_attributes() -> None:
    records = [_record(i, TRAILER_NAMES) for i in (1, 2, 3)]
    text = shots_csv(records, analysed=True, attributes=TRAILER_NAMES)
    header = text.splitlines()[0].split(",")
    at = header.index("audio_class") + 1
    assert tuple(header[at : at + 38]) == TRAILER_NAMES
    rows = _csv_rows(text)
    assert [float(rows[1][n]) for n in TRAILER_NAMES] == list(records[1]["attributes"].values())
    summary = summarize(records, {"name": "f"}, {}, analysed=True, attributes=TRAILER_NAMES)
    assert tuple(summary["attributes"]) == TRAILER_NAMES
    romance = summary["attributes"]["romantic_tension"]  # i = 37: 0.37 + shot/10
    assert romance["max"] == 0.67 and romance["mean"] == pytest.approx(0.57)
    assert [t["shot_id"] for t in romance["top_shots"]] == [3, 2, 1]


def test_without_a_request_the_first_shot_sets_the_columns_and_none_vanish() -> None:
    records = [
        _record(1, ("suspense", "motion")),
        _record(2, ("motion", "suspense", "humor")),  # a name beyond the first shot's
        _record(3, ("suspense",)),  # one lacking a column
    ]
    assert attribute_columns(records) == ["suspense", "motion", "humor"]
    rows = _csv_rows(shots_csv(records, analysed=True))
    assert rows[0]["humor"] == "" and rows[2]["motion"] == "" and rows[1]["humor"] != ""
    summary = summarize(records, {"name": "f"}, {}, analysed=True)
    assert list(summary["attributes"]) == ["suspense", "motion", "humor"]
    assert len(summary["attributes"]["humor"]["top_shots"]) == 1  # over the shots scored on it


def test_mixed_vocabularies_warn_once_when_finalised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = OutputDir(tmp_path)
    out.prepare({"format": 2, "command": "analyze", "film": {}, "settings": {}}, force=False)
    out.append([_record(1, ATTRIBUTES), _record(2, TRAILER_NAMES)])
    records = out.records()
    out.finalize(summarize(records, {}, {}, analysed=True), analysed=True)
    warnings = [r for r in caplog.records if "not all scored on the same" in r.getMessage()]
    assert len(warnings) == 1
    header = (tmp_path / "shots.csv").read_text().splitlines()[0].split(",")
    attrs = header[header.index("audio_class") + 1 : header.index("rms_energy_mean")]
    assert attrs[:6] == list(ATTRIBUTES) and len(attrs) == 6 + 33  # then the trailer's new ones


def test_an_attribute_named_like_a_column_gets_its_own_header() -> None:
    records = [_record(1, ("duration", "suspense"))]
    rows = _csv_rows(shots_csv(records, analysed=True))
    assert rows[0]["duration"] == "0.4" and rows[0]["attribute:duration"] == "0.1"


def test_shots_without_analysis_have_no_attribute_columns() -> None:
    header = shots_csv([_record(1, TRAILER_NAMES)], analysed=False).splitlines()[0]
    assert "suspense" not in header and "caption" not in header


# --- resume ------------------------------------------------------------------------------


def _manifest(attributes: object) -> dict:
    return {
        "format": 2,
        "command": "analyze",
        "film": {"name": "f.mp4", "size": 1},
        "settings": {"detection": {"detector": "adaptive"}, "attributes": attributes},
    }


def test_resume_with_another_vocabulary_is_refused_with_what_changed(tmp_path: Path) -> None:
    trailer = AttributeRequest.from_vocabulary(load_vocabulary_file(TRAILER)[0], "t")
    OutputDir(tmp_path).prepare(_manifest(trailer.output_setting()), force=False)
    assert OutputDir(tmp_path).prepare(_manifest(trailer.output_setting()), force=False) == set()
    names = AttributeRequest.from_names(["suspense", "nope_x"])
    with pytest.raises(OutputConflict) as exc:
        OutputDir(tmp_path).prepare(_manifest(names.output_setting()), force=False)
    message = str(exc.value)
    assert "settings.attributes (38 attributes -> 2 attributes: added nope_x" in message
    assert "removed ambiguity" in message and len(message) < 600
    with pytest.raises(OutputConflict, match=r"the server's vocabulary -> 2 attributes"):
        OutputDir(tmp_path / "d").prepare(_manifest(None), force=False)
        OutputDir(tmp_path / "d").prepare(_manifest(names.output_setting()), force=False)
    defs = trailer.output_setting()
    redefined = [dict(defs[0], evidence=None), *defs[1:]]
    with pytest.raises(OutputConflict, match="redefined suspense"):
        OutputDir(tmp_path).prepare(_manifest(redefined), force=False)
    with pytest.raises(OutputConflict, match="same names in another order"):
        OutputDir(tmp_path).prepare(_manifest(defs[::-1]), force=False)
    assert OutputDir(tmp_path).prepare(_manifest(names.output_setting()), force=True) == set()
    stored = json.loads((tmp_path / "run.json").read_text())
    assert stored["settings"]["attributes"] == ["suspense", "nope_x"]


def test_a_run_from_before_attributes_resumes_with_the_servers_vocabulary(tmp_path: Path) -> None:
    old = _manifest(None)
    del old["settings"]["attributes"]  # run.json written before the setting existed
    OutputDir(tmp_path).prepare(old, force=False)
    assert OutputDir(tmp_path).prepare(_manifest(None), force=False) == set()
    with pytest.raises(OutputConflict, match="attributes"):
        OutputDir(tmp_path).prepare(_manifest(["suspense"]), force=False)


def test_default_vocabulary_request_round_trips() -> None:
    request = AttributeRequest.from_vocabulary(DEFAULT_VOCABULARY, "defaults")
    assert request.names == ATTRIBUTES
    with pytest.raises(ValueError, match="names and definitions differ"):
        AttributeRequest(("motion",), DEFAULT_VOCABULARY.attributes)


def test_the_requested_order_wins_over_the_order_returned() -> None:
    records = [_record(1, ("motion", "suspense")), _record(2, ("motion", "suspense"))]
    requested = ("suspense", "motion")
    header = shots_csv(records, analysed=True, attributes=requested).splitlines()[0]
    assert header.index("suspense") < header.index("motion")
    summary = summarize(records, {"name": "f"}, {}, analysed=True, attributes=requested)
    assert list(summary["attributes"]) == ["suspense", "motion"]
