"""Domain exceptions of the analysis server.

Every error a caller can cause or meet is one of these; ``app`` maps them to HTTP responses in a
single exception handler using ``status_code`` and ``headers``. Messages are shown to callers, so
they name what was wrong and never carry secrets or server file paths.
"""

from __future__ import annotations


class QwenServerError(Exception):
    """Base of all server errors. ``status_code`` is what the HTTP layer answers."""

    status_code: int = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class ConfigError(QwenServerError):
    """Settings are invalid; raised at start-up, before anything is served."""


# --- caller mistakes (4xx) -------------------------------------------------------------------


class InvalidInput(QwenServerError):
    """The request is well-formed JSON but its content cannot be analysed (bad image, ...)."""

    status_code = 422


class PayloadTooLarge(QwenServerError):
    """The request body exceeds ``server.max_body_mb``."""

    status_code = 413


class Unauthorized(QwenServerError):
    """Missing, malformed or wrong bearer key."""

    status_code = 401

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(QwenServerError):
    """The named resource (a session) does not exist."""

    status_code = 404


class Forbidden(QwenServerError):
    """The caller is authenticated but may not reach this resource (a job path outside
    ``jobs.media_roots``)."""

    status_code = 403


class Conflict(QwenServerError):
    """The resource is not in a state that allows the request (a finished job cancelled,
    results of a job still running)."""

    status_code = 409


# --- server state (5xx) ----------------------------------------------------------------------


class Overloaded(QwenServerError):
    """The batching queue is full; the caller should retry after a pause."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 2) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(QwenServerError):
    """The model is still loading, the server is draining, or the engine failed fatally."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InsufficientStorage(QwenServerError):
    """Accepting the request would pass a disk quota (``jobs.max_disk_gb``)."""

    status_code = 507


class EngineFailure(QwenServerError):
    """Generation failed for a reason that is not the caller's fault."""

    status_code = 500


# --- chat provider ---------------------------------------------------------------------------


class ChatError(QwenServerError):
    """Base of failures talking to the chat provider."""

    status_code = 502


class ChatNotConfigured(ChatError):
    """No provider key is configured (``NEBIUS_API_KEY``)."""

    status_code = 503


class ChatUpstreamError(ChatError):
    """The provider refused us (auth) or sent a reply we could not use."""

    status_code = 502


class ChatRateLimited(ChatError):
    """The provider rate-limited us."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ChatTimeout(ChatError):
    """The provider did not answer in ``chat.timeout_s``."""

    status_code = 504
