"""Streamed answers within the total deadline.

``chat.timeout_s`` is the **total** time one answer may take (see ``chat/service.py``): the
deadline is an absolute event-loop time, fixed when the request starts, and ``AnswerStream``
bounds every wait for the next chunk by it. The streamed answer text is refused (502) once it
exceeds ANSWER_CHARS_PER_TOKEN characters per token of ``chat.max_answer_tokens``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..config import Settings
from ..errors import ChatError, ChatUpstreamError
from .provider_errors import map_error, oversized, timed_out

log = logging.getLogger("qwen_server.chat")  # the logger ProviderLogScrubber watches

ANSWER_CHARS_PER_TOKEN = 32


def answer_deadline(settings: Settings) -> float:
    """The event-loop time by which the answer must be complete (``chat.timeout_s``)."""
    return asyncio.get_running_loop().time() + settings.chat.timeout_s


def answer_limit_chars(settings: Settings) -> int:
    """Most characters of streamed answer text accepted, from ``chat.max_answer_tokens``."""
    return ANSWER_CHARS_PER_TOKEN * settings.chat.max_answer_tokens


class AnswerStream:
    """Text deltas of a streamed answer; ``model`` is known once the first chunk arrived.

    Every wait for the next chunk is bounded by the answer's deadline (an absolute event-loop
    time), so the bound holds whichever task iterates the stream (the route reads the first
    delta itself, Starlette's response task the rest).
    """

    def __init__(self, settings: Settings, raw: Any, deadline: float) -> None:
        self._settings = settings
        self._raw = raw
        self._deadline = deadline
        self.model: str = settings.chat.model
        self.finish_reason: str | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _next_chunk(self, chunks: AsyncIterator[Any]) -> Any:
        """The next provider chunk before the deadline; raises StopAsyncIteration at the end."""
        try:
            async with asyncio.timeout_at(self._deadline):
                return await anext(chunks)
        except TimeoutError:
            raise timed_out(self._settings) from None

    async def _deltas(self) -> AsyncIterator[str]:
        got_text = False
        chars = 0
        limit = answer_limit_chars(self._settings)
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
                            raise oversized("answer", self._settings)
                        got_text = True
                        yield text
        except ChatError:
            raise
        except Exception as exc:
            raise map_error(exc, self._settings) from None
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
