"""Provider failures as domain errors (the table in ``chat/service.py``'s docstring).

Never includes the provider's own text: providers echo (part of) the key in auth errors. Logs
carry the exception type, HTTP status and a checked request id only.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Mapping

import openai

from ..config import Settings
from ..errors import ChatError, ChatRateLimited, ChatTimeout, ChatUpstreamError
from .log_scrub import safe_request_id

log = logging.getLogger("qwen_server.chat")  # the logger ProviderLogScrubber watches

DEFAULT_RETRY_AFTER_S = 10
MAX_RETRY_AFTER_S = 3600


def _retry_after_seconds(headers: Mapping[str, str] | None) -> int:
    """The provider's Retry-After (seconds or an HTTP date; ``retry-after-ms`` too), as whole
    seconds in [1, 3600]; DEFAULT_RETRY_AFTER_S when absent or unreadable."""
    if not headers:
        return DEFAULT_RETRY_AFTER_S
    value: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if raw_ms is not None:
            value = float(raw_ms) / 1000
        elif raw is not None:
            value = float(raw)
    except ValueError:
        value = None
    if value is None and raw:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is not None:
            value = email.utils.mktime_tz(parsed) - time.time()
    if value is None or not math.isfinite(value):
        return DEFAULT_RETRY_AFTER_S
    return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(value))))


def _request_id(exc: BaseException) -> str:
    """The provider's request id for ``exc``, checked by ``safe_request_id``."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return safe_request_id(headers.get("x-request-id") if headers is not None else None)


def map_error(exc: BaseException, settings: Settings) -> ChatError:
    """The domain error for a provider failure. Never includes the provider's text."""
    base = settings.chat.base_url
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        err: ChatError = ChatTimeout(
            f"chat provider did not answer within chat.timeout_s ({settings.chat.timeout_s:g} s)"
        )
    elif isinstance(exc, openai.APIConnectionError):
        err = ChatUpstreamError(f"cannot reach the chat provider (chat.base_url = {base})")
    elif isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        err = ChatUpstreamError(
            f"chat provider refused the configured key (HTTP {exc.status_code}); "
            "check NEBIUS_API_KEY"
        )
    elif isinstance(exc, openai.RateLimitError):
        retry_after = _retry_after_seconds(exc.response.headers)
        err = ChatRateLimited(
            f"chat provider is rate limiting requests; retry after {retry_after} s",
            retry_after_s=retry_after,
        )
    elif isinstance(exc, openai.NotFoundError):
        err = ChatUpstreamError(
            f"chat provider answered HTTP 404; check chat.model ({settings.chat.model}) "
            "and chat.base_url"
        )
    elif isinstance(exc, openai.APIStatusError):
        err = ChatUpstreamError(f"chat provider answered HTTP {exc.status_code}")
    elif isinstance(exc, openai.APIError):
        # An error object inside a stream, or a reply the client could not validate.
        err = ChatUpstreamError("chat provider reported an error")
    elif isinstance(exc, ValueError):  # json.JSONDecodeError and friends
        err = ChatUpstreamError("chat provider sent a malformed reply (not valid JSON)")
    else:
        err = ChatUpstreamError("chat provider sent an unexpected reply")
    # Type, status and request id only: the exception text may echo the key.
    log.warning(
        "chat provider failure: %s (status %s, request id %s) -> HTTP %d",
        type(exc).__name__,
        getattr(exc, "status_code", "-"),
        _request_id(exc),
        err.status_code,
    )
    return err


def timed_out(settings: Settings) -> ChatTimeout:
    """The error for an answer that ran past the total deadline (logged here)."""
    timeout = settings.chat.timeout_s
    log.warning("chat provider call exceeded the total deadline (%g s) -> HTTP 504", timeout)
    return ChatTimeout(
        f"chat provider did not finish answering within chat.timeout_s ({timeout:g} s, "
        "the total time allowed for one answer)"
    )


def oversized(what: str, settings: Settings) -> ChatUpstreamError:
    """The error for a reply or answer larger than ``chat.max_answer_tokens`` explains (logged)."""
    tokens = settings.chat.max_answer_tokens
    log.warning("chat provider sent an oversized %s -> HTTP 502", what)
    return ChatUpstreamError(
        f"chat provider sent an oversized {what} (far more than chat.max_answer_tokens = "
        f"{tokens} allows)"
    )
