"""ChatService with the real ``openai`` client against the fake OpenAI-compatible server:
the prompt carries the film, answers are relayed, and every provider failure maps as documented
without the key ever appearing in a message or a log line."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qwen_server.chat.log_scrub import ProviderLogScrubber, safe_request_id
from qwen_server.chat.service import ChatService
from qwen_server.config import Settings, load_settings
from qwen_server.errors import (
    ChatError,
    ChatNotConfigured,
    ChatRateLimited,
    ChatTimeout,
    ChatUpstreamError,
)
from tests.fake_openai_server import FakeOpenAI

PROVIDER_KEY = "sk-nebius-DISTINCTIVE-7c41f0e2"

FILM = [
    {
        "shot_id": 1,
        "start_time": 0.0,
        "end_time": 4.0,
        "caption": "A lighthouse at dusk, waves below",
        "attributes": {
            "suspense": 0.2,
            "darkness": 0.4,
            "ambiguity": 0.1,
            "emotional_tension": 0.2,
            "intensity": 0.3,
            "motion": 0.5,
        },
        "audio_class": "ambience",
    },
    {
        "shot_id": 2,
        "start_time": 4.0,
        "end_time": 7.5,
        "caption": "A hand reaches for a door handle in the dark",
        "attributes": {
            "suspense": 0.91,
            "darkness": 0.88,
            "ambiguity": 0.6,
            "emotional_tension": 0.8,
            "intensity": 0.7,
            "motion": 0.2,
        },
        "audio_class": "silence",
    },
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def provider(fake: FakeOpenAI) -> FakeOpenAI:
    fake.mode = "ok"
    fake.requests.clear()
    fake.delay_s = 6.0
    return fake


def make_settings(base_url: str, key: str | None = PROVIDER_KEY, **chat: Any) -> Settings:
    # timeout_s is the total deadline: short enough for "slow" (fake.delay_s) to pass it, long
    # enough that a good answer on a loaded CI machine never does.
    overrides: dict[str, Any] = {"chat": {"base_url": base_url, "timeout_s": 2.0, **chat}}
    if key is not None:
        overrides["NEBIUS_API_KEY"] = key
    return load_settings(None, **overrides)


@pytest.fixture
def service(provider: FakeOpenAI, monkeypatch) -> ChatService:
    monkeypatch.delenv("NEBIUS_API_KEY", raising=False)
    return ChatService(make_settings(provider.base_url))


def ask(service: ChatService, question: str = "Where is the tension highest?") -> Any:
    async def run() -> Any:
        try:
            prepared = service.prepare(FILM, question, session_id="film-1")
            return await service.complete(prepared)
        finally:
            await service.aclose()

    return asyncio.run(run())


def ask_stream(service: ChatService, question: str = "Where is the tension highest?") -> Any:
    """(deltas received, error raised or None, stream model)."""

    async def run() -> Any:
        deltas: list[str] = []
        try:
            stream = await service.open_stream(service.prepare(FILM, question))
            try:
                async for delta in stream:
                    deltas.append(delta)
            except ChatError as exc:
                return deltas, exc, stream.model
            return deltas, None, stream.model
        finally:
            await service.aclose()

    return asyncio.run(run())


# --- the happy path --------------------------------------------------------------------------


def test_prompt_carries_the_film_and_the_answer_is_relayed(service, provider):
    answer, model = ask(service)
    assert answer == provider.answer and model == "fake/model"
    [req] = provider.requests
    body = req["body"]
    assert body["model"] == "openai/gpt-oss-120b"
    assert body["max_tokens"] == 800 and body["temperature"] == 0.2
    assert not body.get("stream")
    assert req["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    system = body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "system"
    assert "00:00:04.000-00:00:07.500 | 2 | 0.91 0.88 0.60 0.80 0.70 0.20 | silence | " in system
    assert "A lighthouse at dusk, waves below" in system
    assert "cite" in system.lower()
    assert body["messages"][-1] == {"role": "user", "content": "Where is the tension highest?"}


def test_streamed_answer_arrives_in_pieces(service, provider):
    deltas, error, model = ask_stream(service)
    assert error is None
    assert len(deltas) > 1 and "".join(deltas) == provider.answer
    assert model == "fake/model"
    assert provider.requests[-1]["body"]["stream"] is True


def test_cited_shots_from_the_answer(service):
    prepared = service.prepare(FILM, "q")
    assert prepared.cited("Shot 2 (00:00:05.000) beats shot 1; shot 7 is not real.") == [2, 1]


# --- failures --------------------------------------------------------------------------------


def test_no_key_is_503_naming_the_setting(provider, monkeypatch):
    monkeypatch.delenv("NEBIUS_API_KEY", raising=False)
    service = ChatService(make_settings(provider.base_url, key=None))
    assert not service.configured
    with pytest.raises(ChatNotConfigured) as info:
        ask(service)
    assert info.value.status_code == 503 and "NEBIUS_API_KEY" in info.value.message
    assert provider.requests == []


FAILURES = [
    # mode, error class, status, Retry-After
    ("401", ChatUpstreamError, 502, None),
    ("403", ChatUpstreamError, 502, None),
    ("429", ChatRateLimited, 503, "17"),
    ("slow", ChatTimeout, 504, None),
    ("500", ChatUpstreamError, 502, None),
    ("malformed", ChatUpstreamError, 502, None),
    ("no_choices", ChatUpstreamError, 502, None),
    ("empty_content", ChatUpstreamError, 502, None),
]


@pytest.mark.parametrize(("mode", "cls", "status", "retry_after"), FAILURES)
def test_provider_failures_map_without_leaking_the_key(
    service, provider, caplog, mode, cls, status, retry_after
):
    caplog.set_level(logging.DEBUG)  # the openai and httpx debug logs too
    provider.mode = mode
    with pytest.raises(cls) as info:
        ask(service)
    err = info.value
    assert err.status_code == status
    assert err.headers.get("Retry-After") == retry_after
    assert PROVIDER_KEY not in err.message and PROVIDER_KEY not in str(err)
    assert PROVIDER_KEY not in caplog.text
    # No provider exception (whose text may carry the key) is chained to what callers see.
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.mark.parametrize(
    ("mode", "cls", "status", "retry_after"),
    [f for f in FAILURES if f[0] not in ("malformed",)],
)
def test_stream_failures_before_the_first_byte_raise_from_open_stream(
    service, provider, caplog, mode, cls, status, retry_after
):
    caplog.set_level(logging.DEBUG)
    provider.mode = mode
    if mode in ("no_choices", "empty_content"):
        # The stream opens fine and ends without text: reported by the iteration.
        deltas, err, _ = ask_stream(service)
        assert deltas == []
    else:
        with pytest.raises(cls) as info:
            ask_stream(service)
        err = info.value
    assert isinstance(err, cls) and err.status_code == status
    assert err.headers.get("Retry-After") == retry_after
    assert PROVIDER_KEY not in err.message and PROVIDER_KEY not in caplog.text


@pytest.mark.parametrize(
    ("mode", "cls", "status"),
    [
        ("stall_stream", ChatTimeout, 504),
        ("cut_stream", ChatUpstreamError, 502),
        ("error_event", ChatUpstreamError, 502),
    ],
)
def test_failures_mid_stream_are_raised_after_the_text_so_far(
    service, provider, caplog, mode, cls, status
):
    caplog.set_level(logging.DEBUG)
    provider.mode = mode
    deltas, err, _ = ask_stream(service)
    assert deltas and provider.answer.startswith(deltas[0])
    assert isinstance(err, cls) and err.status_code == status
    assert PROVIDER_KEY not in err.message and PROVIDER_KEY not in caplog.text


def test_5xx_is_retried_once_then_reported(provider, monkeypatch):
    monkeypatch.delenv("NEBIUS_API_KEY", raising=False)
    # The retry happens only when the deadline leaves time for it.
    service = ChatService(make_settings(provider.base_url, timeout_s=10))
    provider.mode = "500"
    with pytest.raises(ChatUpstreamError, match="HTTP 500"):
        ask(service)
    assert len(provider.requests) == 2


def test_no_retry_when_the_deadline_leaves_no_time(service, provider, monkeypatch):
    monkeypatch.setattr("qwen_server.chat.service.RETRY_PAUSE_S", 30.0)  # longer than timeout_s
    provider.mode = "503"
    with pytest.raises(ChatUpstreamError, match="HTTP 503"):
        ask(service)
    assert len(provider.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_trickling_provider_is_cut_at_the_total_deadline(provider, monkeypatch, stream):
    """Each byte arrives well within the read timeout; the whole reply would take minutes.
    The call must end near chat.timeout_s with ChatTimeout, not when the trickle ends."""
    monkeypatch.delenv("NEBIUS_API_KEY", raising=False)
    service = ChatService(make_settings(provider.base_url))  # timeout_s 2
    provider.mode = "trickle"
    provider.trickle_interval_s = 0.2
    started = time.monotonic()
    if stream:
        deltas, err, _ = ask_stream(service)
        assert deltas and provider.answer.startswith(deltas[0])  # the first piece came at once
    else:
        with pytest.raises(ChatTimeout) as info:
            ask(service)
        err = info.value
    elapsed = time.monotonic() - started
    assert isinstance(err, ChatTimeout) and err.status_code == 504
    assert "total time" in err.message
    assert elapsed < 15, elapsed  # generous: the trickle alone would take over a minute


@pytest.mark.parametrize("stream", [False, True])
def test_oversized_reply_is_refused(service, provider, stream):
    provider.mode = "oversized"
    if stream:
        deltas, err, _ = ask_stream(service)
        assert sum(map(len, deltas)) <= service.answer_limit_chars
    else:
        with pytest.raises(ChatUpstreamError) as info:
            ask(service)
        err = info.value
    assert isinstance(err, ChatUpstreamError) and err.status_code == 502
    assert "oversized" in err.message


def test_provider_headers_and_debug_logs_never_carry_the_key(service, provider, caplog):
    """401 with the key echoed in the body and in x-request-id, all loggers at DEBUG."""
    caplog.set_level(logging.DEBUG)
    provider.mode = "401"
    with pytest.raises(ChatUpstreamError):
        ask(service)
    assert PROVIDER_KEY not in caplog.text
    assert "request id [unsafe]" in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("httpcore")]


def test_scrubber_escapes_control_characters_and_omits_headers():
    ProviderLogScrubber.add_secret("sk-scrub-test-123456")
    record = logging.LogRecord(
        "openai._base_client", logging.DEBUG, __file__, 1, "x %s %s", ("a\r\nFAKE", {"h": 1}), None
    )
    assert ProviderLogScrubber().filter(record)
    assert record.getMessage() == "x a\\x0d\\x0aFAKE [omitted]"
    record = logging.LogRecord(
        "qwen_server.chat", logging.INFO, __file__, 1, "key sk-scrub-test-123456\x00", None, None
    )
    assert ProviderLogScrubber().filter(record)
    assert record.getMessage() == "key [redacted]\\x00"
    assert safe_request_id("req_abc-123") == "req_abc-123"
    assert safe_request_id("req sk-scrub-test-123456") == "[unsafe]"
    assert safe_request_id(None) == "-"


def test_429_and_timeouts_are_not_retried(service, provider):
    for mode, cls in (("429", ChatRateLimited), ("slow", ChatTimeout)):
        provider.mode = mode
        provider.requests.clear()
        with pytest.raises(cls):
            ask(service)
        assert len(provider.requests) == 1


def test_retry_after_as_http_date_and_missing(service, provider):
    provider.mode = "429"
    provider.retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"  # in the past: at least 1 s
    with pytest.raises(ChatRateLimited) as info:
        ask(service)
    assert info.value.headers["Retry-After"] == "1"
    provider.retry_after = "soon"  # unreadable: the default
    with pytest.raises(ChatRateLimited) as info:
        ask(service)
    assert info.value.headers["Retry-After"] == "10"
    provider.retry_after = "17"


def test_unreachable_provider_is_502(monkeypatch, caplog):
    monkeypatch.delenv("NEBIUS_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = ChatService(make_settings(f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(ChatUpstreamError, match="cannot reach the chat provider") as info:
        ask(service)
    assert info.value.status_code == 502
    assert PROVIDER_KEY not in caplog.text
