"""Bad-inputs drill: hundreds of distinct bad requests, each a 4xx with a ``detail``, never a 500.

Generated systematically over the contract: every field of a shot with wrong types, out-of-range
numbers and huge/negative times; NaN/Infinity and huge numbers in raw JSON; bad base64;
truncated, corrupt, lying and huge-dimension images; wrong array lengths; duplicates; deep
nesting; wrong content types; non-UTF-8, empty and non-object bodies; bad chat requests; bad
session ids and paging. Each is sent to the real server on loopback, and ``/health`` must stay
200 after every one.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import LiveServer
from tests.payloads import audio_features, image_b64

JPEG = image_b64(size=(32, 24))
PNG = image_b64(size=(32, 24), fmt="PNG")


@dataclass(frozen=True)
class Case:
    """One bad request: method, path, and either a JSON body or raw bytes."""

    name: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _lying_jpeg(width: int, height: int) -> bytes:
    raw = bytearray(_jpeg_bytes((16, 16)))
    sof = raw.find(b"\xff\xc0")
    struct.pack_into(">HH", raw, sof + 5, height, width)
    return bytes(raw)


def _png_header(width: int, height: int) -> bytes:
    raw = bytearray(base64.b64decode(PNG))
    raw[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    return bytes(raw)


def _shot(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "shot_id": 1,
        "images": [JPEG],
        "audio_features": audio_features(),
        "start_time": 1.0,
        "end_time": 2.0,
    }
    body.update(extra)
    return body


BAD_IMAGES: dict[str, str] = {
    "not-base64": "!!!not base64!!!",
    "bad-padding": "abc",
    "empty": "",
    "data-url-no-comma": "data:image/jpeg;base64",
    "text": _b64(b"hello world, not an image"),
    "gif": _b64(b"GIF89a" + bytes(40)),
    "jpeg-magic-only": _b64(b"\xff\xd8\xff"),
    "png-magic-only": _b64(b"\x89PNG\r\n\x1a\n"),
    "jpeg-cut-half": _b64(_jpeg_bytes((200, 150))[:1500]),
    "jpeg-cut-forged-eoi": _b64(_jpeg_bytes((400, 300))[:700] + b"\xff\xd9"),
    "jpeg-header-lies-2000": _b64(_lying_jpeg(2000, 2000)),
    "jpeg-header-lies-wide": _b64(_lying_jpeg(1999, 17)),
    "jpeg-huge-dimensions": _b64(_lying_jpeg(60000, 60000)),
    "png-huge-dimensions": _b64(_png_header(100_000, 100_000)),
    "png-header-lies": _b64(_png_header(2000, 2000)),
    "png-bad-crc": _b64(base64.b64decode(PNG)[:29] + b"\0\0\0\0" + base64.b64decode(PNG)[33:]),
    "png-cut": _b64(base64.b64decode(PNG)[:60]),
    "jpeg-garbage-body": _b64(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),
    "base64-of-base64": _b64(JPEG.encode()),
    "whitespace-inside": JPEG[:10] + " \n " + JPEG[10:],
}

# Per field: values that are the wrong type or out of range.
FIELD_VALUES: dict[str, list[Any]] = {
    "shot_id": [True, "7", 7.5, -1, 2**53 + 1, None, [], {}, 1e20, "", 10**30],
    "images": [None, "x", [], [1], [None], {}, [[]], True],
    "start_time": [True, "1", -1, -1e-9, 604800.5, 1.8e305, [], {}],
    "end_time": [True, "2", -5, 604801, 1e306, [1.0]],
    "duration": [True, "1", -0.5, 1e300, {}],
    "audio_features": [[], "x", 1, True],
}
AUDIO_VALUES: dict[str, list[Any]] = {
    "mfcc_mean": [[0.0] * 12, [0.0] * 14, ["a"] * 13, [True] * 13, "x", 1, [[1.0]] * 13, []],
    "mfcc_std": [[0.0] * 3, [None] * 13, {}],
    "spectral_centroid_mean": [-1, True, "1", [], {}],
    "spectral_rolloff_mean": [-0.1, "x"],
    "spectral_bandwidth_mean": [-100, False],
    "zero_crossing_rate_mean": [1.5, -0.1, True, "0.1"],
    "rms_energy_mean": [-1, True, "0.1"],
    "rms_energy_std": [-1, []],
    "chroma_mean": [[0.5] * 11, [0.5] * 13, [-0.5] * 12, [True] * 12, "x"],
    "tempo": [-1, True, "120", []],
    # Issue 15: speech, music, beats and loudness.
    "speech_ratio": [1.01, -0.1, True, "0.5", []],
    "music_ratio": [2, -1e-9, False],
    "speech_segments": [
        [{"start": 1.0, "end": 0.5}],
        [{"start": 0.0, "end": 1.0}, {"start": 0.5, "end": 1.5}],
        [{"start": -1.0, "end": 1.0}],
        [{"start": 0.0}],
        [{"start": i, "end": i + 0.5} for i in range(65)],
        {"start": 0.0, "end": 1.0},
        [[0.0, 1.0]],
    ],
    "beat_times": [[0.5, 0.4], [-0.1], [0.01 * i for i in range(513)], ["0.5"], 0.5],
    "loudness_lufs": [-120.5, 10.5, True, "-23"],
    "loudness_range_lu": [-1, 100.5, [5]],
}


def _analysis_cases() -> Iterator[Case]:
    # The same bad shot is tried alone (/analyze) and in a batch (/analyze_batch).
    bad_shots: dict[str, dict[str, Any]] = {}
    for key, values in FIELD_VALUES.items():
        for i, value in enumerate(values):
            if value is None and key in ("start_time",):
                continue  # None is a valid "no time"
            bad_shots[f"{key}={i}"] = _shot(**{key: value})
    for key, values in AUDIO_VALUES.items():
        for i, value in enumerate(values):
            bad_shots[f"audio.{key}={i}"] = _shot(audio_features={**audio_features(), key: value})
    for name, data in BAD_IMAGES.items():
        bad_shots[f"image.{name}"] = _shot(images=[JPEG, data])
    bad_shots["end-before-start"] = _shot(start_time=10.0, end_time=9.0)
    bad_shots["too-many-frames"] = _shot(images=[JPEG] * 9)
    bad_shots["missing-shot-id"] = {"images": [JPEG]}
    bad_shots["missing-images"] = {"shot_id": 1}
    for name, body in bad_shots.items():
        yield Case(f"analyze/{name}", "POST", "/analyze", body)
        yield Case(f"batch/{name}", "POST", "/analyze_batch", {"shots": [body]})

    batches: dict[str, Any] = {
        "shots-empty": {"shots": []},
        "shots-null": {"shots": None},
        "shots-object": {"shots": {}},
        "shots-string": {"shots": "x"},
        "shots-missing": {"session_id": "film"},
        "duplicate-ids": {"shots": [_shot(), _shot()]},
        "too-many-shots": {"shots": [_shot(shot_id=i) for i in range(65)]},
        "session-empty": {"session_id": "", "shots": [_shot()]},
        "session-traversal": {"session_id": "../etc/passwd", "shots": [_shot()]},
        "session-too-long": {"session_id": "a" * 129, "shots": [_shot()]},
        "session-number": {"session_id": 1, "shots": [_shot()]},
        "session-bool": {"session_id": True, "shots": [_shot()]},
        "session-space": {"session_id": " film", "shots": [_shot()]},
        "session-newline": {"session_id": "film\n", "shots": [_shot()]},
        "title-too-long": {"title": "t" * 501, "shots": [_shot()]},
        "title-number": {"title": 5, "shots": [_shot()]},
        "body-list": [_shot()],
        "body-null": None,
        "body-number": 3,
        "body-string": "shots",
    }
    for name, body in batches.items():
        yield Case(f"batch/{name}", "POST", "/analyze_batch", body)


def _raw_cases() -> Iterator[Case]:
    good = json.dumps({"shots": [_shot()]})
    json_type = {"Content-Type": "application/json"}
    for token in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999"):
        for key in ("start_time", "tempo"):
            needle = '"start_time": 1.0' if key == "start_time" else '"tempo": 0.0'
            assert needle in good
            raw = good.replace(needle, f'"{key}": {token}').encode()
            yield Case(f"raw/{key}={token}", "POST", "/analyze_batch", raw=raw, headers=json_type)
        for key in ("speech_ratio", "loudness_lufs", "loudness_range_lu"):  # issue 15
            raw = good.replace('"tempo": 0.0', f'"tempo": 0.0, "{key}": {token}').encode()
            yield Case(f"raw/{key}={token}", "POST", "/analyze_batch", raw=raw, headers=json_type)
    raw_bodies: dict[str, bytes] = {
        "empty": b"",
        "whitespace": b"   \n",
        "truncated-json": good[: len(good) // 2].encode(),
        "not-json": b"{not json",
        "trailing-garbage": good.encode() + b" garbage",
        "non-utf8": b'{"shots": [{"shot_id": 1, "images": ["\xff\xfe"]}]}',
        "latin1-bytes": '{"title": "caf\xe9"}'.encode("latin-1"),
        # (UTF-16/32 JSON is valid input: json.loads detects it from the bytes.)
        "json-with-comment": b'{"shots": [] /* comment */}',
        "nul-bytes": b"\x00" * 64,
        "deep-list": b"[" * 50_000 + b"]" * 50_000,
        "deep-object": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        "duplicate-keys-bad-last": b'{"shots": [{"shot_id": 1, "shot_id": true, "images": ["x"]}]}',
        "big-int": b'{"shots": [{"shot_id": 1' + b"0" * 5000 + b', "images": ["x"]}]}',
        "lone-surrogate": b'{"shots": [{"shot_id": 1, "images": ["\\ud800"]}]}',
    }
    for name, raw in raw_bodies.items():
        for path in ("/analyze_batch", "/analyze", "/chat"):
            yield Case(f"raw/{name}{path}", "POST", path, raw=raw, headers=json_type)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        yield Case(
            f"content-type/{ctype}", "POST", "/analyze_batch", raw=good.encode(),
            headers={"Content-Type": ctype},
        )  # fmt: skip


def _chat_cases() -> Iterator[Case]:
    row = {"shot_id": 1, "caption": "a door", "attributes": {"suspense": 0.5}, "start_time": 1.0}
    bodies: dict[str, Any] = {
        "no-question": {"results": [row]},
        "blank-question": {"question": "   ", "results": [row]},
        "question-number": {"question": 5, "results": [row]},
        "question-too-long": {"question": "q" * 4001, "results": [row]},
        "neither-source": {"question": "q"},
        "both-sources": {"question": "q", "session_id": "film", "results": [row]},
        "results-empty": {"question": "q", "results": []},
        "results-object": {"question": "q", "results": {}},
        "bad-session-id": {"question": "q", "session_id": "../x"},
        "session-id-number": {"question": "q", "session_id": 7},
        "stream-string": {"question": "q", "results": [row], "stream": "yes"},
        "stream-number": {"question": "q", "results": [row], "stream": 1},
        "history-bad-role": {
            "question": "q", "results": [row], "history": [{"role": "system", "content": "x"}],
        },
        "history-empty-content": {
            "question": "q", "results": [row], "history": [{"role": "user", "content": ""}],
        },
        "history-too-long": {
            "question": "q", "results": [row],
            "history": [{"role": "user", "content": "x"}] * 21,
        },
        "duplicate-shot-ids": {"question": "q", "results": [row, row]},
    }  # fmt: skip
    bad_rows: dict[str, dict[str, Any]] = {
        "id-true": {**row, "shot_id": True},
        "id-string": {**row, "shot_id": "7"},
        "id-float": {**row, "shot_id": 1.5},
        "id-negative": {**row, "shot_id": -1},
        "id-missing": {"caption": "x"},
        "score-true": {**row, "attributes": {"suspense": True}},
        "score-string": {**row, "attributes": {"darkness": "0.5"}},
        "score-above-1": {**row, "attributes": {"motion": 1.5}},
        "score-negative": {**row, "attributes": {"intensity": -0.1}},
        "attributes-list": {**row, "attributes": [0.5]},
        "start-huge": {**row, "start_time": 1.8e305},
        "start-alias-huge": {"shot_id": 1, "start": 1e306},
        "end-huge": {**row, "end_time": 604801},
        "end-alias-negative": {"shot_id": 1, "end": -3},
        "start-true": {**row, "start_time": True},
        "caption-too-long": {**row, "caption": "c" * 2001},
        "caption-number": {**row, "caption": 5},
        "audio-class-too-long": {**row, "audio_class": "a" * 65},
        "row-string": "shot 1",
    }
    for name, bad in bad_rows.items():
        bodies[f"row-{name}"] = {"question": "q", "results": [bad]}
    for name, body in bodies.items():
        yield Case(f"chat/{name}", "POST", "/chat", body)


def _session_cases() -> Iterator[Case]:
    for query in (
        "limit=0", "limit=201", "limit=-1", "limit=x", "limit=1.5", "offset=-1",
        "offset=1000000001", "offset=abc", "limit=", "limit=99999999999999999999999",
    ):  # fmt: skip
        yield Case(f"sessions/list?{query}", "GET", f"/sessions?{query}")
    for bad_id in ("-x", "%20x", "a" * 129, "x%00y", "..", "x%0Ay", "%C3%A9t%C3%A9", "x;y", "x%ZZ"):
        yield Case(f"sessions/get/{bad_id[:20]}", "GET", f"/sessions/{bad_id}")
        yield Case(f"sessions/delete/{bad_id[:20]}", "DELETE", f"/sessions/{bad_id}")
    yield Case("sessions/get-unknown", "GET", "/sessions/never-stored-film")
    yield Case("sessions/delete-unknown", "DELETE", "/sessions/never-stored-film")
    yield Case("method/get-analyze", "GET", "/analyze")
    yield Case("method/put-sessions", "PUT", "/sessions/film")
    yield Case("method/post-session", "POST", "/sessions/film", {"x": 1})
    yield Case("route/unknown", "POST", "/analyze_batches", {"shots": []})


CASES: list[Case] = [*_analysis_cases(), *_raw_cases(), *_chat_cases(), *_session_cases()]


def test_the_drill_is_large_and_every_case_distinct() -> None:
    assert len(CASES) >= 150
    assert len({c.name for c in CASES}) == len(CASES)
    requests = {(c.method, c.path, json.dumps(c.body), c.raw, str(c.headers)) for c in CASES}
    assert len(requests) == len(CASES)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_4xx_with_detail_and_the_server_stays_healthy(
    server: LiveServer, client: httpx.Client, case: Case
) -> None:
    kwargs: dict[str, Any] = {"headers": case.headers}
    if case.raw is not None:
        kwargs["content"] = case.raw
    elif case.body is not None or case.method == "POST":
        kwargs["content"] = json.dumps(case.body).encode()
        kwargs["headers"] = {"Content-Type": "application/json", **case.headers}
    r = client.request(case.method, case.path, **kwargs)
    assert 400 <= r.status_code < 500, f"{case.name}: {r.status_code} {r.text[:500]}"
    assert "detail" in r.json(), r.text[:500]
    assert len(r.content) < 50_000  # never echoes megabytes of input back
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
