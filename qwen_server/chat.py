"""Questions about a film, answered by an OpenAI-compatible chat provider (Nebius AI Studio).

``ChatService`` turns a film's shot results into messages (``chat_context``), calls the provider
with the official ``openai`` client (``AsyncOpenAI``), and maps every provider failure to a
domain error, so a caller sees 502/503/504 with a clear message and never a 500:

=============================================  ==============================================
provider failure                               domain error (HTTP)
=============================================  ==============================================
no ``NEBIUS_API_KEY``                          ChatNotConfigured (503)
401 / 403                                      ChatUpstreamError (502)
429                                            ChatRateLimited (503, provider's Retry-After)
timeout (``chat.timeout_s``)                   ChatTimeout (504)
connection refused / reset / DNS               ChatUpstreamError (502)
other HTTP status                              ChatUpstreamError (502)
non-JSON body, no choices, empty answer        ChatUpstreamError (502)
=============================================  ==============================================

The provider's own error text is never passed on or logged: providers echo (part of) the key in
auth errors. Messages and logs carry the HTTP status and request id only.

Retries: the ``openai`` client is built with ``max_retries=0`` and this module retries once, itself,
only where a retry is cheap and likely to help (connection failures and 5xx before any answer
text). A 429 or a timeout is returned at once: retrying a 429 server-side would hold the caller
for up to the provider's Retry-After (the client library honours up to two minutes), and retrying
a timeout doubles ``chat.timeout_s``; the caller is better placed to decide.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from .chat_context import FilmContext, build_context, cited_in, film_shots
from .config import Settings
from .errors import (
    ChatError,
    ChatNotConfigured,
    ChatRateLimited,
    ChatTimeout,
    ChatUpstreamError,
)

log = logging.getLogger("qwen_server.chat")

RETRY_PAUSE_S = 0.5
DEFAULT_RETRY_AFTER_S = 10
MAX_RETRY_AFTER_S = 3600


@dataclass
class PreparedChat:
    """One question, ready to send: the messages and the film they were built from."""

    context: FilmContext
    results: Sequence[Mapping[str, Any]]
    session_id: str | None

    def cited(self, answer: str) -> list[int]:
        """Shot ids the answer cites, in order of first mention."""
        return cited_in(answer, film_shots(self.results))


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
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    rid = headers.get("x-request-id") if headers is not None else None
    return str(rid) if rid else "-"


class ChatService:
    """Answers questions about a film through the configured chat provider."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI]] = {}

    # --- configuration --------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """True when a provider key is set (``NEBIUS_API_KEY``)."""
        key = self.settings.nebius_api_key
        return key is not None and bool(key.get_secret_value().strip())

    def ensure_configured(self) -> None:
        """Raise ChatNotConfigured (503) unless a provider key is set."""
        if not self.configured:
            raise ChatNotConfigured(
                "chat is not configured: set the NEBIUS_API_KEY environment variable on the "
                "server (the chat provider's API key)"
            )

    def _client(self) -> openai.AsyncOpenAI:
        """The client for the running event loop.

        httpx connection pools belong to one event loop; keying by loop keeps a service that
        outlives a loop (test clients, restarts of an embedded server) from reusing dead pools.
        """
        self.ensure_configured()
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        key = self.settings.nebius_api_key
        assert key is not None  # ensure_configured checked it
        client = openai.AsyncOpenAI(
            api_key=key.get_secret_value().strip(),
            base_url=self.settings.chat.base_url,
            timeout=self.settings.chat.timeout_s,
            max_retries=0,  # see the module docstring: one retry, ours, where it helps
        )
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        self._clients[id(loop)] = (loop, client)
        return client

    async def aclose(self) -> None:
        """Close the provider clients (their connection pools)."""
        clients, self._clients = self._clients, {}
        for loop, client in clients.values():
            if loop is asyncio.get_running_loop():
                await client.close()

    # --- building the question ------------------------------------------------------------

    def prepare(
        self,
        results: Sequence[Mapping[str, Any]],
        question: str,
        *,
        history: Sequence[Mapping[str, str]] = (),
        session_id: str | None = None,
        title: str | None = None,
    ) -> PreparedChat:
        """Build the messages for ``question`` within ``chat.max_context_tokens``.

        CPU work proportional to the film's length: call it from a worker thread for long films.
        """
        context = build_context(
            results,
            question,
            history=history,
            max_context_tokens=self.settings.chat.max_context_tokens,
            title=title or session_id,
        )
        log.info(
            "chat context: %d of %d shots, %d history turns, ~%d tokens",
            context.shots_in_context,
            context.shots_total,
            context.history_kept,
            context.estimated_tokens,
        )
        return PreparedChat(context=context, results=results, session_id=session_id)

    # --- calling the provider -------------------------------------------------------------

    def _map_error(self, exc: BaseException) -> ChatError:
        """The domain error for a provider failure. Never includes the provider's text."""
        base = self.settings.chat.base_url
        if isinstance(exc, ChatError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            err: ChatError = ChatTimeout(
                f"chat provider did not answer within chat.timeout_s "
                f"({self.settings.chat.timeout_s:g} s)"
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
                f"chat provider answered HTTP 404; check chat.model ({self.settings.chat.model}) "
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

    async def _create(self, prepared: PreparedChat, *, stream: bool) -> Any:
        """``chat.completions.create`` with one retry on connection failures and 5xx."""
        client = self._client()
        chat = self.settings.chat
        for attempt in (1, 2):
            try:
                return await client.chat.completions.create(
                    model=chat.model,
                    messages=prepared.context.messages,  # type: ignore[arg-type]
                    max_tokens=chat.max_answer_tokens,
                    temperature=chat.temperature,
                    stream=stream,
                )
            except openai.APITimeoutError as exc:
                raise self._map_error(exc) from None
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                if attempt == 2:
                    raise self._map_error(exc) from None
                log.info("chat provider %s; retrying once", type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)
            except Exception as exc:
                raise self._map_error(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete(self, prepared: PreparedChat) -> tuple[str, str]:
        """The whole answer and the model that gave it. Raises ChatError subclasses."""
        completion = await self._create(prepared, stream=False)
        choices = getattr(completion, "choices", None)
        if not choices:
            log.warning("chat provider reply had no choices")
            raise ChatUpstreamError("chat provider sent a reply without choices")
        choice = choices[0]
        content = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(content, str) or not content.strip():
            reason = getattr(choice, "finish_reason", None)
            log.warning("chat provider sent an empty answer (finish_reason %s)", reason)
            hint = "; raise chat.max_answer_tokens" if reason == "length" else ""
            raise ChatUpstreamError(f"chat provider sent an empty answer{hint}")
        model = getattr(completion, "model", None) or self.settings.chat.model
        return content, str(model)

    async def open_stream(self, prepared: PreparedChat) -> AnswerStream:
        """Start a streamed answer.

        Failures before the provider starts answering (no key, auth, 429, timeout) raise here,
        so the HTTP layer can still answer with a proper status; later failures are raised by
        the returned stream's iteration, as ChatError subclasses.
        """
        raw = await self._create(prepared, stream=True)
        return AnswerStream(self, raw)


class AnswerStream:
    """Text deltas of a streamed answer; ``model`` is known once the first chunk arrived."""

    def __init__(self, service: ChatService, raw: Any) -> None:
        self._service = service
        self._raw = raw
        self.model: str = service.settings.chat.model
        self.finish_reason: str | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        got_text = False
        try:
            async for chunk in self._raw:
                if getattr(chunk, "model", None):
                    self.model = str(chunk.model)
                # Chunks without choices (usage reports) and reasoning-only deltas carry no text.
                for choice in getattr(chunk, "choices", None) or []:
                    if getattr(choice, "finish_reason", None):
                        self.finish_reason = str(choice.finish_reason)
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(text, str) and text:
                        got_text = True
                        yield text
        except ChatError:
            raise
        except Exception as exc:
            raise self._service._map_error(exc) from None
        finally:
            await self.aclose()
        if not got_text:
            log.warning("chat provider streamed no answer (finish_reason %s)", self.finish_reason)
            hint = "; raise chat.max_answer_tokens" if self.finish_reason == "length" else ""
            raise ChatUpstreamError(f"chat provider sent an empty answer{hint}")

    async def aclose(self) -> None:
        """Release the provider connection (also when the caller went away mid-answer)."""
        close = getattr(self._raw, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing a broken stream must not mask the real error
                log.debug("error closing the provider stream", exc_info=True)
