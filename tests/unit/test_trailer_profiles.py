"""Genre profiles: the shipped ones, the file forms (scoring_weights, plain weights, the trailer
pipeline's genre_profiles), FILE:NAME, every refusal naming the key, and resolving a profile
against the attributes a results folder holds (missing ones warned with their weight share)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from client.errors import EXIT_USAGE, UsageError
from client.trailer.profiles import load_profile, resolve, shipped_names

REPO = Path(__file__).resolve().parents[2]
SIX = ("suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion")
PIPELINE_FILE = REPO / "examples" / "trailer_attributes.yaml"


def test_shipped_profiles_load_and_name_their_weights() -> None:
    assert shipped_names() == ["action", "comedy", "drama", "thriller"]
    thriller = load_profile("thriller")
    assert thriller.source == "shipped" and thriller.description
    assert dict(thriller.weights) == {
        "suspense": 0.35,
        "ambiguity": 0.25,
        "darkness": 0.2,
        "emotional_tension": 0.2,
    }
    for name in shipped_names():
        assert sum(load_profile(name).weights.values()) == pytest.approx(1.0)


def test_thriller_and_action_score_with_the_six_defaults_alone() -> None:
    thriller = resolve(load_profile("thriller"), SIX)
    assert thriller.missing == () and thriller.missing_share == 0.0
    action = resolve(load_profile("action"), SIX)
    assert action.missing == ("impact",)
    assert sum(action.weights.values()) == pytest.approx(1.0)
    assert action.weights["intensity"] == pytest.approx(0.35 / 0.8)


def test_missing_attributes_are_warned_with_their_share(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="client.trailer"):
        drama = resolve(load_profile("drama"), SIX)
    assert drama.missing == ("emotional_intensity", "intimacy", "warmth")
    assert drama.missing_share == pytest.approx(0.6)
    assert dict(drama.weights) == pytest.approx({"emotional_tension": 0.75, "darkness": 0.25})
    (line,) = [r.getMessage() for r in caplog.records]
    assert "lack emotional_intensity, intimacy, warmth (60% of the profile's weight)" in line
    assert "scoring with emotional_tension, darkness" in line


def test_a_profile_over_none_of_the_attributes_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        resolve(load_profile("comedy"), SIX)
    assert info.value.exit_code == EXIT_USAGE
    text = str(info.value)
    assert "none of its attributes (humor, lightheartedness, timing, absurdity)" in text
    assert "they hold suspense, darkness" in text and "--attributes" in text


def test_the_pipeline_file_loads_with_file_colon_name() -> None:
    sci_fi = load_profile(f"{PIPELINE_FILE}:sci-fi")
    assert sci_fi.name == "sci-fi" and sci_fi.source == str(PIPELINE_FILE)
    assert dict(sci_fi.weights) == {
        "futuristic": 0.35,
        "technology": 0.25,
        "wonder": 0.2,
        "scale": 0.2,
    }
    with pytest.raises(UsageError, match="holds 5 profiles .*choose one with .*:NAME"):
        load_profile(str(PIPELINE_FILE))
    with pytest.raises(UsageError, match="has no profile 'horror' \\(it holds thriller, comedy"):
        load_profile(f"{PIPELINE_FILE}:horror")


def test_file_forms_scoring_weights_and_plain(tmp_path: Path) -> None:
    one = tmp_path / "mine.yaml"
    one.write_text("noir:\n  description: night\n  scoring_weights: {darkness: 3, suspense: 1}\n")
    noir = load_profile(str(one))
    assert (noir.name, noir.description, dict(noir.weights)) == (
        "noir",
        "night",
        {"darkness": 3.0, "suspense": 1.0},
    )
    assert resolve(noir, SIX).weights == pytest.approx({"darkness": 0.75, "suspense": 0.25})
    both = tmp_path / "both.yml"
    both.write_text("a: {motion: 1}\nb: {scoring_weights: {intensity: 0.5}}\n")
    assert dict(load_profile(f"{both}:b").weights) == {"intensity": 0.5}
    assert dict(load_profile(f"{both}:a").weights) == {"motion": 1.0}
    as_json = tmp_path / "p.json"
    as_json.write_text('{"calm": {"scoring_weights": {"darkness": 0, "motion": 2}}}')
    assert dict(load_profile(str(as_json)).weights) == {"darkness": 0.0, "motion": 2.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: {darkness: -1}\n", "x.darkness: weight -1 must be >= 0"),
        ("x: {darkness: high}\n", "x.darkness: weight 'high' is not a number"),
        ("x: {darkness: true}\n", "weight True is not a number"),
        ("x: {Dark Ness: 1}\n", "'Dark Ness' is not an attribute name"),
        ("x: {darkness: 0, motion: 0}\n", "x: the weights add up to 0"),
        ("x: {}\n", "x has no weights"),
        ("x: {scoring_weights: [darkness]}\n", "x.scoring_weights must be a mapping"),
        ("x: 3\n", "x must be a mapping of attribute to weight"),
        ("- darkness\n", "must map profile names to weights"),
        ("x: {darkness: 1, darkness: 2}\n", "line 1: key 'darkness' written twice"),
        ("x: {darkness: [1\n", "is not valid YAML at line"),
        ("x: {darkness: .nan}\n", "weight nan must be >= 0"),
    ],
)
def test_bad_profile_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_profile(str(path))
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_unknown_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such shipped profile \\(shipped: action, comedy"):
        load_profile("horror")
    with pytest.raises(UsageError, match="nope.yaml cannot be read"):
        load_profile(str(tmp_path / "nope.yaml"))
    with pytest.raises(UsageError, match="empty value"):
        load_profile(" ")
