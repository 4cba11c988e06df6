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

Here: ChatService (configure, prepare, ask) and the retry. The pieces: ``provider_errors.py``
(failure -> domain error, Retry-After, request ids), ``streaming.py`` (AnswerStream, the total
deadline), ``log_scrub.py`` (ProviderLogScrubber).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from ..config import Settings
from ..errors import ChatNotConfigured, ChatUpstreamError
from .citations import cited_in
from .context import FilmContext, build_context
from .film_table import film_shots
from .log_scrub import ProviderLogScrubber
from .provider_errors import map_error, oversized, timed_out
from .streaming import AnswerStream, answer_deadline, answer_limit_chars

log = logging.getLogger("qwen_server.chat")

RETRY_PAUSE_S = 0.5
# Reply size limits, derived from chat.max_answer_tokens (see the module docstring).
REPLY_BYTES_PER_TOKEN = 64
MIN_REPLY_BYTES = 1 << 20


@dataclass
class PreparedChat:
    """One question, ready to send: the messages and the film they were built from."""

    context: FilmContext
    results: Sequence[Mapping[str, Any]]
    session_id: str | None

    def cited(self, answer: str) -> list[int]:
        """Shot ids the answer cites, in order of first mention."""
        return cited_in(answer, film_shots(self.results))


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

    # --- size limits ------------------------------------------------------------------------

    @property
    def reply_limit_bytes(self) -> int:
        """Largest whole (non-streamed) reply body accepted, from ``chat.max_answer_tokens``."""
        return max(MIN_REPLY_BYTES, REPLY_BYTES_PER_TOKEN * self.settings.chat.max_answer_tokens)

    @property
    def answer_limit_chars(self) -> int:
        """Most characters of streamed answer text accepted, from ``chat.max_answer_tokens``."""
        return answer_limit_chars(self.settings)

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
                    raise oversized("reply", self.settings)
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
                raise timed_out(self.settings) from None
            except openai.APITimeoutError as exc:
                raise map_error(exc, self.settings) from None
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                if attempt == 2 or loop.time() + RETRY_PAUSE_S >= deadline:
                    raise map_error(exc, self.settings) from None
                log.info("chat provider %s; retrying once", type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)
            except Exception as exc:
                raise map_error(exc, self.settings) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete(self, prepared: PreparedChat) -> tuple[str, str]:
        """The whole answer and the model that gave it, within ``chat.timeout_s`` in total.
        Raises ChatError subclasses."""
        completion = await self._create(
            prepared, stream=False, deadline=answer_deadline(self.settings)
        )
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
        end = answer_deadline(self.settings)
        raw = await self._create(prepared, stream=True, deadline=end)
        return AnswerStream(self.settings, raw, end)
