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
not done within ``chat.timeout_s`` (total)     ChatTimeout (504)
connection refused / reset / DNS               ChatUpstreamError (502)
other HTTP status                              ChatUpstreamError (502)
non-JSON body, no choices, empty answer        ChatUpstreamError (502)
reply larger than max_answer_tokens explains   ChatUpstreamError (502)
=============================================  ==============================================

The provider's own error text is never passed on or logged: providers echo (part of) the key in
auth errors. Messages and logs carry the HTTP status and request id only.

Retries: the ``openai`` client is built with ``max_retries=0`` and this module retries once, itself,
only where a retry is cheap and likely to help (connection failures and 5xx before any answer
text) and only while the deadline leaves time for it. A 429 or a timeout is returned at once:
retrying a 429 server-side would hold the caller for up to the provider's Retry-After (the client
library honours up to two minutes); the caller is better placed to decide.

Deadline: ``chat.timeout_s`` is the **total** time one answer may take, from the first byte sent
to the provider to the last byte of the answer, retry included, streamed or not. The client's own
httpx timeout (the same value) only bounds each read, so a provider trickling one byte a second
would never trip it; ``asyncio.timeout_at`` around every await on the provider enforces the total.
A streamed answer that runs past it ends with an ``error`` event carrying 504.

Size: a reply is read incrementally and refused (502) once it exceeds what
``chat.max_answer_tokens`` can explain (REPLY_BYTES_PER_TOKEN bytes per token for a whole JSON
reply, ANSWER_CHARS_PER_TOKEN characters per token of streamed answer text), so a broken provider
cannot make the server buffer an unbounded body.

Logs: provider errors are logged as exception type, HTTP status and a checked request id, never
their text or headers. The ``openai`` and ``httpx`` loggers get ``ProviderLogScrubber``, which
omits header mappings, sanitises request ids, redacts the configured key and escapes control
characters, in case their DEBUG output is switched on; httpcore's header traces are held off
(its loggers at INFO).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from ..config import Settings
from ..errors import (
    ChatError,
    ChatNotConfigured,
    ChatRateLimited,
    ChatTimeout,
    ChatUpstreamError,
)
from ..logsafe import escape_log
from .citations import cited_in
from .context import FilmContext, build_context
from .film_table import film_shots

log = logging.getLogger("qwen_server.chat")

RETRY_PAUSE_S = 0.5
DEFAULT_RETRY_AFTER_S = 10
MAX_RETRY_AFTER_S = 3600
# Reply size limits, derived from chat.max_answer_tokens (see the module docstring).
REPLY_BYTES_PER_TOKEN = 64
MIN_REPLY_BYTES = 1 << 20
ANSWER_CHARS_PER_TOKEN = 32

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def _escape_lines(text: str) -> str:
    """A multi-line text (a traceback) with each line escaped by ``escape_log``."""
    return "\n".join(escape_log(line) for line in text.split("\n"))


class ProviderLogScrubber(logging.Filter):
    """Makes records of the provider client libraries (and of this module) safe to keep.

    Secrets registered with ``add_secret`` (the provider key) are replaced by ``[redacted]``;
    mapping arguments (response headers, request options) become ``[omitted]``; the request id
    that ``openai`` logs at DEBUG is kept only when it looks like an id; control characters are
    escaped.
    """

    # Loggers that get a scrubber: filters apply to the logger a record is made on, not its
    # children, so every ``openai.*`` module logger is covered at install time.
    LOGGERS = ("openai", "httpx", "httpx2", "qwen_server.chat")
    # httpcore's only output is DEBUG traces that print raw response headers: held at INFO.
    QUIETED = ("httpcore", "httpcore2")
    _secrets: set[str] = set()

    @classmethod
    def add_secret(cls, value: str) -> None:
        """Redact ``value`` from every record passing a scrubber (ignored when too short to be
        a key: redacting "a" would mangle every message)."""
        if len(value) >= 8:
            cls._secrets.add(value)

    @classmethod
    def redact(cls, text: str) -> str:
        """``text`` with every registered secret replaced."""
        for secret in cls._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    @classmethod
    def install(cls) -> None:
        """Attach one scrubber to each logger in LOGGERS and to every ``openai.*`` logger, and
        hold the QUIETED loggers at INFO (idempotent)."""
        names = set(cls.LOGGERS) | {
            n for n in logging.root.manager.loggerDict if n.startswith("openai.")
        }
        for name in sorted(names):
            logger = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in logger.filters):
                logger.addFilter(cls())
        for name in cls.QUIETED:
            logger = logging.getLogger(name)
            if logger.level < logging.INFO:  # NOTSET too: it would inherit DEBUG from root
                logger.setLevel(logging.INFO)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            args = ("[omitted]",)
        elif args:
            if record.msg == "request_id: %s":
                args = tuple(safe_request_id(a) for a in args)
            else:
                args = tuple("[omitted]" if isinstance(a, Mapping) else a for a in args)
        try:
            message = str(record.msg) % args if args else str(record.msg)
        except (TypeError, ValueError):
            message = f"{record.msg} {args!r}"
        record.msg = escape_log(self.redact(message))
        record.args = None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = _escape_lines(self.redact(text))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = _escape_lines(self.redact(record.exc_text))
        return True


def safe_request_id(value: object) -> str:
    """A provider request id fit for a log line: ``-`` when absent, ``[unsafe]`` when it does not
    look like an id (it is a response header, and a provider may echo anything, a key included)."""
    if not value:
        return "-"
    text = str(value)
    if not _SAFE_REQUEST_ID.fullmatch(text) or ProviderLogScrubber.redact(text) != text:
        return "[unsafe]"
    return text


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
    """The provider's request id for ``exc``, checked by ``safe_request_id``."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return safe_request_id(headers.get("x-request-id") if headers is not None else None)


class ChatService:
    """Answers questions about a film through the configured chat provider."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[
            int, tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI, tuple[Any, ...]]
        ] = {}
        self._closing: set[asyncio.Task[None]] = set()  # old clients being closed
        ProviderLogScrubber.install()
        key = settings.nebius_api_key
        if key is not None and key.get_secret_value().strip():
            ProviderLogScrubber.add_secret(key.get_secret_value().strip())

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
        """The client for the running event loop and the current provider settings.

        httpx connection pools belong to one event loop; keying by loop keeps a service that
        outlives a loop (test clients, restarts of an embedded server) from reusing dead pools.
        A change of key, ``chat.base_url`` or ``chat.timeout_s`` builds a new client.
        """
        self.ensure_configured()
        loop = asyncio.get_running_loop()
        key = self.settings.nebius_api_key
        assert key is not None  # ensure_configured checked it
        secret = key.get_secret_value().strip()
        ProviderLogScrubber.add_secret(secret)
        chat = self.settings.chat
        signature = (secret, chat.base_url, chat.timeout_s)
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            if entry[2] == signature:
                return entry[1]
            # Settings changed: close the old client's pool in the background.
            task = loop.create_task(entry[1].close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        client = openai.AsyncOpenAI(
            api_key=secret,
            base_url=chat.base_url,
            # Bounds connect and each read; the total is enforced by the deadline (_create).
            timeout=chat.timeout_s,
            max_retries=0,  # see the module docstring: one retry, ours, where it helps
        )
        self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
        self._clients[id(loop)] = (loop, client, signature)
        return client

    async def aclose(self) -> None:
        """Close the provider clients (their connection pools)."""
        clients, self._clients = self._clients, {}
        for loop, client, _ in clients.values():
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

    # --- deadline and size limits -----------------------------------------------------------

    def _deadline(self) -> float:
        """The event-loop time by which the answer must be complete (``chat.timeout_s``)."""
        return asyncio.get_running_loop().time() + self.settings.chat.timeout_s

    def _timed_out(self) -> ChatTimeout:
        """The error for an answer that ran past the total deadline (logged here)."""
        timeout = self.settings.chat.timeout_s
        log.warning("chat provider call exceeded the total deadline (%g s) -> HTTP 504", timeout)
        return ChatTimeout(
            f"chat provider did not finish answering within chat.timeout_s ({timeout:g} s, "
            "the total time allowed for one answer)"
        )

    @property
    def reply_limit_bytes(self) -> int:
        """Largest whole (non-streamed) reply body accepted, from ``chat.max_answer_tokens``."""
        return max(MIN_REPLY_BYTES, REPLY_BYTES_PER_TOKEN * self.settings.chat.max_answer_tokens)

    @property
    def answer_limit_chars(self) -> int:
        """Most characters of streamed answer text accepted, from ``chat.max_answer_tokens``."""
        return ANSWER_CHARS_PER_TOKEN * self.settings.chat.max_answer_tokens

    def _oversized(self, what: str) -> ChatUpstreamError:
        tokens = self.settings.chat.max_answer_tokens
        log.warning("chat provider sent an oversized %s -> HTTP 502", what)
        return ChatUpstreamError(
            f"chat provider sent an oversized {what} (far more than chat.max_answer_tokens = "
            f"{tokens} allows)"
        )

    # --- calling the provider, within the deadline -------------------------------------------

    async def _attempt(self, prepared: PreparedChat, *, stream: bool) -> Any:
        """One provider request: the opened stream, or the whole reply parsed as JSON."""
        client = self._client()
        chat = self.settings.chat
        kwargs: dict[str, Any] = {
            "model": chat.model,
            "messages": prepared.context.messages,
            "max_tokens": chat.max_answer_tokens,
            "temperature": chat.temperature,
        }
        if stream:
            return await client.chat.completions.create(stream=True, **kwargs)
        # Read the body ourselves, piece by piece, so its size can be bounded.
        limit = self.reply_limit_bytes
        body = bytearray()
        async with client.chat.completions.with_streaming_response.create(**kwargs) as response:
            async for piece in response.iter_bytes():
                body += piece
                if len(body) > limit:
                    raise self._oversized("reply")
        return json.loads(body)

    async def _create(self, prepared: PreparedChat, *, stream: bool, deadline: float) -> Any:
        """``_attempt`` within ``deadline``, with one retry on connection failures and 5xx when
        the deadline leaves time for it."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._attempt(prepared, stream=stream)
            except TimeoutError:
                raise self._timed_out() from None
            except openai.APITimeoutError as exc:
                raise self._map_error(exc) from None
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                if attempt == 2 or loop.time() + RETRY_PAUSE_S >= deadline:
                    raise self._map_error(exc) from None
                log.info("chat provider %s; retrying once", type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)
            except Exception as exc:
                raise self._map_error(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete(self, prepared: PreparedChat) -> tuple[str, str]:
        """The whole answer and the model that gave it, within ``chat.timeout_s`` in total.
        Raises ChatError subclasses."""
        completion = await self._create(prepared, stream=False, deadline=self._deadline())
        choices = completion.get("choices") if isinstance(completion, dict) else None
        if not choices or not isinstance(choices, list):
            log.warning("chat provider reply had no choices")
            raise ChatUpstreamError("chat provider sent a reply without choices")
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            reason = choice.get("finish_reason")
            log.warning("chat provider sent an empty answer (finish_reason %.40s)", reason)
            hint = "; raise chat.max_answer_tokens" if reason == "length" else ""
            raise ChatUpstreamError(f"chat provider sent an empty answer{hint}")
        model = completion.get("model")
        return content, str(model) if isinstance(model, str) and model else self.settings.chat.model

    async def open_stream(self, prepared: PreparedChat) -> AnswerStream:
        """Start a streamed answer; the whole stream shares one ``chat.timeout_s`` deadline.

        Failures before the provider starts answering (no key, auth, 429, timeout) raise here,
        so the HTTP layer can still answer with a proper status; later failures (the deadline
        included) are raised by the returned stream's iteration, as ChatError subclasses.
        """
        deadline = self._deadline()
        raw = await self._create(prepared, stream=True, deadline=deadline)
        return AnswerStream(self, raw, deadline)


class AnswerStream:
    """Text deltas of a streamed answer; ``model`` is known once the first chunk arrived.

    Every wait for the next chunk is bounded by the answer's deadline (an absolute event-loop
    time), so the bound holds whichever task iterates the stream (the route reads the first
    delta itself, Starlette's response task the rest).
    """

    def __init__(self, service: ChatService, raw: Any, deadline: float) -> None:
        self._service = service
        self._raw = raw
        self._deadline = deadline
        self.model: str = service.settings.chat.model
        self.finish_reason: str | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _next_chunk(self, chunks: AsyncIterator[Any]) -> Any:
        """The next provider chunk before the deadline; raises StopAsyncIteration at the end."""
        try:
            async with asyncio.timeout_at(self._deadline):
                return await anext(chunks)
        except TimeoutError:
            raise self._service._timed_out() from None

    async def _deltas(self) -> AsyncIterator[str]:
        got_text = False
        chars = 0
        limit = self._service.answer_limit_chars
        try:
            chunks = aiter(self._raw)
            while True:
                try:
                    chunk = await self._next_chunk(chunks)
                except StopAsyncIteration:
                    break
                if getattr(chunk, "model", None):
                    self.model = str(chunk.model)
                # Chunks without choices (usage reports) and reasoning-only deltas carry no text.
                for choice in getattr(chunk, "choices", None) or []:
                    if getattr(choice, "finish_reason", None):
                        self.finish_reason = str(choice.finish_reason)
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(text, str) and text:
                        chars += len(text)
                        if chars > limit:
                            raise self._service._oversized("answer")
                        got_text = True
                        yield text
        except ChatError:
            raise
        except Exception as exc:
            raise self._service._map_error(exc) from None
        finally:
            await self.aclose()
        if not got_text:
            log.warning(
                "chat provider streamed no answer (finish_reason %.40s)", self.finish_reason
            )
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
