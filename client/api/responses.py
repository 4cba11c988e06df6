"""Reading the servers' answers to ``POST /analyze_batch``, without any connection.

``parse_batch_answer`` checks a 200 answer against the contract before anything is written: one
result per shot sent, in order, each with an ``attributes`` mapping of finite numbers and, when
the run asked for attributes, exactly those names (a server that scored something else would
otherwise leave holes or foreign columns in the results). ``rejection`` turns a 4xx answer into
the run's final error, naming the requested attribute a 422 is about.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from client.api.bodies import error_detail
from client.errors import RequestRejected, ServerProtocolError


@dataclass(frozen=True)
class BatchResult:
    """A server's answer to one batch."""

    results: list[dict[str, Any]]
    model: str | None
    server: str
    # With a session id: whether the server stored the batch (False: it answered, but its store
    # failed and ``store_error`` says why; the results are still good). None without a session.
    stored: bool | None = None
    store_error: str | None = None


def _is_score(value: object) -> bool:
    """A JSON number that can be written back out (no bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_attributes(result: dict[str, Any], expected: Sequence[str] | None, url: str) -> None:
    """ServerProtocolError unless the result's ``attributes`` is a mapping of finite numbers
    holding exactly ``expected`` (any names when None: the server's vocabulary)."""
    shot = result.get("shot_id")
    attrs = result.get("attributes")
    if not isinstance(attrs, dict) or not attrs:
        raise ServerProtocolError(f"{url}: result for shot {shot} lacks attributes")
    bad = [name for name, value in attrs.items() if not _is_score(value)]
    if bad:
        raise ServerProtocolError(
            f"{url}: result for shot {shot} has attributes that are not numbers: "
            + ", ".join(bad[:5])
        )
    if expected is None:
        return
    missing = [name for name in expected if name not in attrs]
    if missing:
        raise ServerProtocolError(
            f"{url}: result for shot {shot} lacks the requested attributes "
            + ", ".join(missing[:8])
            + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")
        )
    wanted = set(expected)
    extra = [name for name in attrs if name not in wanted]
    if extra:
        raise ServerProtocolError(
            f"{url}: result for shot {shot} has attributes that were not requested: "
            + ", ".join(extra[:8])
        )


def parse_batch_answer(
    response: httpx.Response, ids: list[int], url: str, expected: Sequence[str] | None = None
) -> BatchResult:
    """The BatchResult of a 200 answer to the shots ``ids`` (see the module doc), or
    ServerProtocolError naming the server and the shot at fault."""
    try:
        data = response.json()
        results = data["results"]
    except (ValueError, KeyError, TypeError):
        raise ServerProtocolError(f"{url} answered 200 without a results list") from None
    if not isinstance(results, list):
        raise ServerProtocolError(f"{url} answered 200 without a results list")
    got = [r.get("shot_id") if isinstance(r, dict) else None for r in results]
    if got != ids:
        raise ServerProtocolError(f"{url} returned results for shots {got}, expected {ids}")
    for r in results:
        check_attributes(r, expected, url)
    stored = data.get("stored")
    return BatchResult(
        results=results,
        model=data.get("model"),
        server=url,
        stored=stored if isinstance(stored, bool) else None,
        store_error=str(data["store_error"]) if data.get("store_error") else None,
    )


_ITEM = re.compile(r"\battributes\[(\d+)\]")


def _validation_errors(response: httpx.Response) -> list[dict[str, Any]]:
    """A 422's list of validation errors (pydantic's ``detail`` form), else []."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return []
    if isinstance(detail, list):
        return [e for e in detail if isinstance(e, dict)]
    return []


def _about_attributes(response: httpx.Response) -> tuple[int | None, str] | None:
    """(index of the requested attribute, what is wrong) when a refusal is about the request's
    ``attributes``, else None. Reads both the server's own message (``attributes[3]: ...``) and
    pydantic's errors (``loc: ["body", "attributes", 3, ...]``)."""
    for err in _validation_errors(response):
        loc = [str(part) for part in err.get("loc") or ()]
        if "attributes" in loc:
            at = loc.index("attributes")
            index = int(loc[at + 1]) if at + 1 < len(loc) and loc[at + 1].isdigit() else None
            where = ".".join(loc[at:])
            return index, f"{where}: {err.get('msg', 'invalid')}"
    detail = error_detail(response)
    match = _ITEM.search(detail)
    if match:
        return int(match.group(1)), detail
    if "attribute" in detail:
        return None, detail
    return None


def rejection(
    response: httpx.Response, ids: list[int], url: str, requested: Sequence[str] | None
) -> RequestRejected:
    """The run's error for a 4xx answer (never retried: the same request would be refused
    again). A refusal of the requested attributes names the attribute and points at the fix."""
    status = response.status_code
    about = _about_attributes(response) if status in (400, 422) else None
    if about is not None:
        index, detail = about
        named = ""
        if requested is not None and index is not None and 0 <= index < len(requested):
            named = f" {requested[index]!r}"
        return RequestRejected(
            f"{url} refused the requested attribute{named} (HTTP {status}: {detail}); "
            "check --attributes, or define the attribute in a vocabulary file"
        )
    return RequestRejected(
        f"{url} rejected a batch of shots {ids[0]}..{ids[-1]} "
        f"(HTTP {status}: {error_detail(response)})"
    )
