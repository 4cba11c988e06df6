"""What goes over the wire to the analysis servers, without any connection: session ids, the
shot objects and body of ``POST /analyze_batch``, and reading a server's ``Retry-After`` and
error detail.
"""

from __future__ import annotations

import base64
import email.utils
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx

from qwen_server.contract.constants import is_valid_session_id

_SESSION_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def session_id_for(filename: str) -> str:
    """A session id from a film's file name: every character the contract's rule
    (``SESSION_ID_RULE``) does not allow becomes ``_``, leading separators are dropped, and the
    result is cut to 128 characters; "film" when nothing is left."""
    sid = _SESSION_BAD.sub("_", filename).lstrip("._-")[:128]
    if not is_valid_session_id(sid):
        sid = "film"
    return sid


def shot_payload(
    shot_id: int,
    jpegs: Sequence[bytes],
    audio_features: dict[str, Any] | None,
    start_time: float,
    end_time: float,
    duration: float,
) -> dict[str, Any]:
    """One shot object of the contract (images as base64 JPEG; audio features omitted when the
    film has none; ``tempo`` omitted when not meaningful)."""
    body: dict[str, Any] = {
        "shot_id": shot_id,
        "images": [base64.b64encode(j).decode("ascii") for j in jpegs],
        "start_time": start_time,
        "end_time": end_time,
        "duration": duration,
    }
    if audio_features is not None:
        body["audio_features"] = {k: v for k, v in audio_features.items() if v is not None}
    return body


def batch_body(
    shots: list[dict[str, Any]],
    session_id: str | None = None,
    title: str | None = None,
    attributes: Sequence[str | dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /analyze_batch``: the shots, the optional session and title (cut to
    the contract's 500 characters) and the requested ``attributes`` (names or definitions,
    ``AttributeRequest.request_items``); without them the server scores its whole vocabulary."""
    body: dict[str, Any] = {"shots": shots}
    if session_id:
        body["session_id"] = session_id
    if title:
        body["title"] = title[:500]
    if attributes is not None:
        body["attributes"] = list(attributes)
    return body


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer in one line (or its body's start), at most 300
    characters."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if detail is None:
        detail = response.text[:200]
    text = detail if isinstance(detail, str) else str(detail)
    return text.replace("\n", " ")[:300]
