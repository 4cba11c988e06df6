"""Request bodies follow the contract; session ids and Retry-After parsing."""

from __future__ import annotations

import email.utils
import time

import numpy as np
import pytest

from client.api import parse_retry_after, session_id_for, shot_payload
from client.media.features import compute_features
from qwen_server.contract.analysis import AnalyzeBatchRequest
from qwen_server.contract.constants import is_valid_session_id as valid_session_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sintel_excerpt_26s.mp4", "sintel_excerpt_26s.mp4"),
        ("My Film (2020) — final.mkv", "My_Film_2020_final.mkv"),
        ("..hidden.mp4", "hidden.mp4"),
        ("???", "film"),
    ],
)
def test_session_id_from_file_name(name: str, expected: str) -> None:
    sid = session_id_for(name)
    assert sid == expected and valid_session_id(sid)


def test_session_id_is_capped_at_128() -> None:
    sid = session_id_for("x" * 300 + ".mp4")
    assert len(sid) == 128 and valid_session_id(sid)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31


def test_payload_validates_against_the_server_schema() -> None:
    feats = compute_features(np.zeros(22050, np.float32), 22050)  # silent: tempo is None
    shot = shot_payload(3, [b"\xff\xd8jpeg", b"\xff\xd8more"], feats, 1.5, 3.0, 1.5)
    assert "tempo" not in shot["audio_features"]
    body = AnalyzeBatchRequest.model_validate(
        {"session_id": "film.mp4", "title": "film.mp4", "shots": [shot]}
    )
    assert body.shots[0].shot_id == 3 and len(body.shots[0].images) == 2
    no_audio = shot_payload(4, [b"x"], None, 0.0, 1.0, 1.0)
    assert "audio_features" not in no_audio
