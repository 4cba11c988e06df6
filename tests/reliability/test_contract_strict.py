"""The contract is strict about what callers send, and flags what the server had to make up.

Drills of issue 8: huge finite times (1.8e305 once overflowed the timecodes of /chat into a 500,
and /analyze_batch stored them, poisoning the session), lax types (``shot_id: true`` or ``"7"``,
a score of ``true``), a JPEG whose header claims 2000x2000 but holds 16x16 data, and model
answers that fall back to neutral values without saying so.
"""

from __future__ import annotations

import base64
import io
import re
import struct

import numpy as np
import pytest
from PIL import Image

from qwen_server.analysis.images import decode_image
from qwen_server.analysis.jpeg_structure import jpeg_shortfall
from qwen_server.contract.analysis import AnalyzeBatchRequest, ShotIn
from qwen_server.contract.chat import ChatRequest
from qwen_server.contract.constants import ATTRIBUTES, MAX_TIME_S
from qwen_server.errors import InvalidInput
from tests.conftest import LiveServer
from tests.payloads import audio_features, image_b64, shot

# --- bounded times ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["start_time", "end_time", "duration"])
@pytest.mark.parametrize("value", [1.8e305, 1e306, MAX_TIME_S + 0.001, -0.5])
def test_times_outside_0_to_7_days_are_refused(field: str, value: float) -> None:
    body = {"shot_id": 1, "images": ["x"], field: value}
    if field == "end_time":
        body["start_time"] = 0.0
    with pytest.raises(ValueError, match=field):
        ShotIn.model_validate(body)


def test_seven_days_exactly_is_accepted() -> None:
    s = ShotIn.model_validate(
        {"shot_id": 1, "images": ["x"], "start_time": 0, "end_time": MAX_TIME_S}
    )
    assert s.duration == MAX_TIME_S


def test_analyze_batch_refuses_huge_times_so_no_session_is_poisoned(server: LiveServer) -> None:
    with server.client() as c:
        body = {"session_id": "poison-film", "shots": [shot(1, n_frames=1, start_time=1.8e305)]}
        # Raw JSON: 1.8e305 is finite, so this is what a real caller can send.
        r = c.post("/analyze_batch", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][-1] == "start_time"
        assert c.get("/sessions/poison-film").status_code == 404


@pytest.mark.parametrize("key", ["start_time", "end_time", "start", "end"])
def test_chat_refuses_huge_inline_times_with_422_not_500(server: LiveServer, key: str) -> None:
    with server.client() as c:
        r = c.post(
            "/chat",
            json={"question": "when?", "results": [{"shot_id": 1, "caption": "x", key: 1.8e305}]},
        )
        assert r.status_code == 422, r.text
        assert "detail" in r.json()
        assert c.get("/health").status_code == 200


# --- strict types ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [True, False, "7", 7.0, 7.5, None, [7], {"id": 7}])
def test_shot_id_must_be_a_json_integer(bad) -> None:
    with pytest.raises(ValueError, match="shot_id"):
        AnalyzeBatchRequest.model_validate_json(
            _json({"shots": [{"shot_id": bad, "images": ["x"]}]})
        )


@pytest.mark.parametrize("bad", [True, "0.5", "1"])
def test_chat_scores_and_ids_must_be_numbers(bad) -> None:
    with pytest.raises(ValueError, match="suspense"):
        ChatRequest.model_validate_json(
            _json({"question": "q", "results": [{"shot_id": 1, "attributes": {"suspense": bad}}]})
        )
    with pytest.raises(ValueError, match="shot_id"):
        ChatRequest.model_validate_json(_json({"question": "q", "results": [{"shot_id": bad}]}))


def test_json_integers_stay_valid_floats() -> None:
    """What real callers send: ``"tempo": 120`` and whole-second times are numbers too."""
    feats = {**audio_features(), "tempo": 120, "spectral_centroid_mean": 2500}
    s = ShotIn.model_validate_json(
        _json({"shot_id": 3, "images": ["x"], "audio_features": feats, "start_time": 10})
    )
    assert s.audio_features is not None and s.audio_features.tempo == 120.0
    assert s.start_time == 10.0
    chat = ChatRequest.model_validate_json(
        _json({"question": "q", "results": [{"shot_id": 1, "attributes": {"suspense": 1}}]})
    )
    assert chat.results is not None and chat.results[0].attributes.suspense == 1.0


@pytest.mark.parametrize("bad", [True, "120"])
def test_audio_features_are_strict_numbers(bad) -> None:
    with pytest.raises(ValueError, match="tempo"):
        ShotIn.model_validate_json(
            _json({"shot_id": 1, "images": ["x"], "audio_features": {"tempo": bad}})
        )


def test_http_refuses_lax_types_and_serves_integers(server: LiveServer) -> None:
    with server.client() as c:
        for bad in (True, "7"):
            r = c.post("/analyze", json={**shot(1, n_frames=1), "shot_id": bad})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"][-1] == "shot_id"
        r = c.post(
            "/chat",
            json={"question": "q", "results": [{"shot_id": 1, "attributes": {"suspense": True}}]},
        )
        assert r.status_code == 422, r.text
        feats = {**audio_features(), "tempo": 120}
        r = c.post("/analyze", json=shot(2, n_frames=1, audio_features=feats, start_time=4))
        assert r.status_code == 200, r.text
        assert r.json()["start_time"] == 4.0


# --- truncated images ------------------------------------------------------------------------


def _jpeg(size: tuple[int, int], **save: object) -> bytes:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    return buf.getvalue()


def _header_lie(data: bytes, width: int, height: int) -> bytes:
    """The same file with its frame header (SOF) claiming another size."""
    raw = bytearray(data)
    sof = next(i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] in (0xC0, 0xC2))
    struct.pack_into(">HH", raw, sof + 5, height, width)
    return bytes(raw)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep_pixels", [None, 448 * 448])  # with and without DCT draft scaling
def test_jpeg_claiming_2000x2000_with_16x16_data_is_refused(progressive, keep_pixels) -> None:
    lie = _header_lie(_jpeg((16, 16), progressive=progressive), 2000, 2000)
    with pytest.raises(InvalidInput, match="shot 1 image 0: truncated JPEG"):
        decode_image(
            base64.b64encode(lie).decode(),
            max_pixels=4_000_000,
            keep_pixels=keep_pixels,
            where="shot 1 image 0",
        )


@pytest.mark.parametrize("keep_pixels", [None, 448 * 448])
@pytest.mark.parametrize("fraction", [0.002, 0.1, 0.5, 0.9, 0.999])
def test_jpeg_cut_short_is_refused(keep_pixels, fraction) -> None:
    """A cut file is an error (LOAD_TRUNCATED_IMAGES stays off, the decode is forced in full),
    with or without DCT draft scaling."""
    data = _jpeg((1200, 900), quality=90)
    with pytest.raises(InvalidInput, match="truncated"):
        decode_image(
            base64.b64encode(data[: int(len(data) * fraction)]).decode(),
            max_pixels=4_000_000,
            keep_pixels=keep_pixels,
            where="f",
        )


@pytest.mark.parametrize("keep_pixels", [None, 448 * 448])
def test_jpeg_cut_short_with_a_forged_end_marker_is_refused_below_the_bound(keep_pixels) -> None:
    """libjpeg fills a scan that meets an end marker early with grey and calls it a warning;
    the structure check refuses it whenever the data left cannot code the declared size."""
    data = _jpeg((1200, 900), quality=90)
    forged = data[:2000] + b"\xff\xd9"
    with pytest.raises(InvalidInput, match="truncated JPEG"):
        decode_image(
            base64.b64encode(forged).decode(),
            max_pixels=4_000_000,
            keep_pixels=keep_pixels,
            where="f",
        )


@pytest.mark.parametrize("size", [(1, 1), (17, 9), (640, 360), (2000, 2000)])
@pytest.mark.parametrize(
    "save",
    [
        {"quality": 1},
        {"quality": 1, "optimize": True},
        {"quality": 95, "subsampling": 0},
        {"progressive": True, "quality": 1, "optimize": True},
        {"quality": 1, "restart_marker_blocks": 1},
    ],
    ids=["q1", "q1-optimized", "q95-444", "progressive", "restart-markers"],
)
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_complete_jpegs_never_fail_the_structure_check(size, save, mode) -> None:
    # Flat images give the smallest possible scans: the bound must still hold.
    img = Image.new("RGB", size, (40, 90, 200)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save)
    assert jpeg_shortfall(buf.getvalue()) is None


def test_http_refuses_the_header_lie_with_422(server: LiveServer) -> None:
    lie = base64.b64encode(_header_lie(_jpeg((16, 16)), 2000, 2000)).decode()
    with server.client() as c:
        r = c.post("/analyze", json={**shot(5, n_frames=1), "images": [image_b64(), lie]})
        assert r.status_code == 422, r.text
        assert "shot 5 image 1: truncated JPEG" in r.json()["detail"]


# --- flagged fallbacks -----------------------------------------------------------------------


def _fallback_counts(text: str) -> dict[str, float]:
    found = re.findall(r'^qwen_fallback_fields_total\{field="([a-z_]+)"\} ([0-9.e+]+)$', text, re.M)
    return {name: float(value) for name, value in found}


def test_results_say_which_fields_fell_back_and_metrics_count_them(server: LiveServer) -> None:
    """Every result carries ``fallback`` (what the model's answer lacked); /metrics counts the
    same fields. The tiny random model's answers may or may not be complete: the check is
    that result and counter agree, field by field."""
    with server.client() as c:
        before = _fallback_counts(c.get("/metrics").text)
        assert set(before) == {"caption", *ATTRIBUTES, "other"}  # every series from the start
        r = c.post("/analyze_batch", json={"shots": [shot(i, n_frames=2) for i in range(3)]})
        assert r.status_code == 200, r.text
        after = _fallback_counts(c.get("/metrics").text)
    expected = dict.fromkeys(before, 0.0)
    for result in r.json()["results"]:
        assert isinstance(result["fallback"], list)
        assert set(result["fallback"]) <= {"caption", *ATTRIBUTES}
        for name in result["fallback"]:
            expected[name] += 1
        if "caption" in result["fallback"]:
            assert result["caption"] == "(no caption)"
    # The shared server may serve other tests meanwhile only if they run in parallel (they
    # do not): the counter moved by exactly this request's fallbacks.
    assert {k: after[k] - before[k] for k in before} == expected


def _json(obj: object) -> str:
    import json

    return json.dumps(obj)
