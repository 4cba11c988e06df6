"""Issue 15 over HTTP: the speech, music, beat and loudness fields reach ``audio_class``, the cues
and the fused scores of the real server on loopback; bad values are a 422 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.payloads import audio_features, shot

# A steady hum: by the v1 rules (no burstiness, flat chroma, no tempo) plain ambience.
HUM = {**audio_features(rms=0.02, zcr=0.01, centroid=250.0), "rms_energy_std": 0.001}
NEW_FIELDS = ("speech_ratio", "music_ratio", "loudness_lufs", "loudness_range_lu", "beat_density")


def _post(server: LiveServer, shots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with server.client() as c:
        r = c.post("/analyze_batch", json={"shots": shots})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_new_fields_reach_the_audio_class_and_cues(server: LiveServer) -> None:
    dialogue = {
        **HUM,
        "speech_ratio": 0.8,
        "speech_segments": [{"start": 0.1, "end": 0.7}, {"start": 0.9, "end": 1.4}],
        "loudness_lufs": -23.0,
        "loudness_range_lu": 4.5,
    }
    beats = [i * 0.25 for i in range(6)]
    music = {**HUM, "speech_ratio": 0.0, "music_ratio": 0.9, "beat_times": beats, "tempo": 120.0}
    old, speech, song = _post(
        server,
        [
            shot(1, n_frames=2, audio_features=HUM),
            shot(2, n_frames=2, audio_features=dialogue),
            shot(3, n_frames=2, audio_features=music),
        ],
    )
    assert old["audio_class"] == "ambience"
    assert all(old["audio"][k] is None for k in NEW_FIELDS)  # an older client: v1 cues only
    assert speech["audio_class"] == "speech"
    assert speech["audio"]["summary"].startswith(
        "dialogue (speech 80 % of the shot), moderate (-23 LUFS)"
    )
    assert speech["audio"]["loudness"] == pytest.approx(37 / 60, abs=1e-4)
    assert (speech["audio"]["speech_ratio"], speech["audio"]["loudness_range_lu"]) == (0.8, 4.5)
    assert song["audio_class"] == "music" and "beat ~120 BPM" in song["audio"]["summary"]
    assert song["audio"]["beat_density"] == pytest.approx(6 / 1.5, abs=1e-4)  # 6 beats in 1.5 s
    for res in (old, speech, song):
        assert "audio:emotional_tension" in res["evidence"]["emotional_tension"]


def test_the_loudness_attribute_follows_lufs(server: LiveServer) -> None:
    attrs = [{"name": "loud", "description": "how loud the shot sounds", "evidence": "loudness"}]
    shots = [
        shot(i, n_frames=1, audio_features={**HUM, "loudness_lufs": lufs}, attributes=attrs)
        for i, lufs in ((1, -50.0), (2, -10.0))
    ]
    quiet, loud = _post(server, shots)
    assert quiet["audio"]["loudness"] < loud["audio"]["loudness"]
    assert quiet["evidence"]["loud"] == ["audio:loudness"]
    # The audio term is what LUFS moved: fused = (1 - w) * model + w * loudness.
    w = server.app.state.settings.fusion.audio_weight
    for res in (quiet, loud):
        expected = (1 - w) * res["model_attributes"]["loud"] + w * res["audio"]["loudness"]
        assert res["attributes"]["loud"] == pytest.approx(expected, abs=1e-3)


BAD = {
    "speech_ratio": 1.5,
    "music_ratio": -0.2,
    "speech_segments": [{"start": 0.0, "end": 1.0}, {"start": 0.5, "end": 1.2}],
    "beat_times": [1.0, 0.5],
    "loudness_lufs": -500.0,
    "loudness_range_lu": 101.0,
}


@pytest.mark.parametrize(("field", "value"), list(BAD.items()), ids=list(BAD))
def test_bad_values_are_a_422_naming_the_field(server: LiveServer, field: str, value: Any) -> None:
    body = shot(1, n_frames=1, audio_features={**HUM, field: value})
    with server.client() as c:
        for path, payload in (("/analyze", body), ("/analyze_batch", {"shots": [body]})):
            r = c.post(path, json=payload)
            assert r.status_code == 422, r.text
            detail = r.json()["detail"][0]
            assert detail["loc"][-2:] == ["audio_features", field], detail


def test_openapi_documents_the_new_fields(server: LiveServer) -> None:
    with server.client() as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
    fields = schemas["AudioFeatures"]["properties"]
    for name in (*BAD, "tempo"):
        assert fields[name].get("description"), name
    for name in ("SpeechSegment", "AudioCues"):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
    lufs = fields["loudness_lufs"]["anyOf"][0]
    assert (lufs["minimum"], lufs["maximum"]) == (-120, 10)
