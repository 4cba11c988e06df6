"""Chat-provider failure drill: every way the provider can fail, against the real server.

The real server (uvicorn on loopback, tiny real model) calls the fake OpenAI-compatible provider
(``tests/fake_openai_server.py``, loopback) through the real ``openai`` client. For each fault,
streamed and not: ``/chat`` answers with the documented status (never a 500) and a clear
``detail``, a streamed answer that already started ends with one ``error`` event, the provider
key appears neither in the response nor in any log record (all loggers at DEBUG, the fake echoes
the key in its error bodies and in ``x-request-id``), the call ends within ``chat.timeout_s``
plus a generous margin, and ``/health`` is still 200 afterwards.

Statuses (see ``qwen_server/chat.py``): provider unreachable, 401/403, 5xx, malformed JSON, no
choices, empty or oversized answer -> 502; 429 -> 503 with the provider's Retry-After; no bytes
(hang) or a trickle past the total deadline -> 504.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.chat import sse_events
from tests.conftest import LiveServer, run_server, test_settings
from tests.fake_openai_server import FakeOpenAI
from tests.integration.test_chat_api import PROVIDER_KEY, film

TIMEOUT_S = 2.0  # chat.timeout_s of the drill server
MARGIN_S = 13.0  # bounded wait, not a tight threshold: any fault must end by TIMEOUT_S + this
HUGE = 1.8e305


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


@pytest.fixture(scope="module")
def live(fake: FakeOpenAI, tiny_model_dir: Path, tmp_path_factory) -> Iterator[LiveServer]:
    settings = test_settings(
        tiny_model_dir,
        tmp_path_factory.mktemp("chat-faults"),
        chat={"base_url": fake.base_url, "timeout_s": TIMEOUT_S},
        NEBIUS_API_KEY=PROVIDER_KEY,
    )
    with run_server(settings) as server:
        server.app.state.store.save_results("night-film", film(), title="Night", model="tiny")
        yield server


@pytest.fixture
def provider(fake: FakeOpenAI) -> FakeOpenAI:
    fake.mode = "ok"
    fake.retry_after = "17"
    fake.delay_s = 3.0
    fake.trickle_interval_s = 0.25  # each read quick; a whole reply takes over a minute
    fake.requests.clear()
    return fake


def ask(live: LiveServer, *, stream: bool, session: str = "night-film") -> dict[str, Any]:
    """POST /chat and read the whole response: status, headers, JSON or SSE events, seconds."""
    body = {"session_id": session, "question": "Which shot is scariest?", "stream": stream}
    started = time.monotonic()
    with (
        live.client() as c,  # its 120 s read timeout is far beyond any expected end
        c.stream("POST", "/chat", json=body) as r,
    ):
        is_sse = r.headers.get("content-type", "").startswith("text/event-stream")
        if is_sse:
            lines = list(r.iter_lines())
            text = "\n".join(lines)
            events = [(e, json.loads(d)) for e, d in sse_events(iter(lines))]
        else:
            text = r.read().decode()
            events = []
    return {
        "status": r.status_code,
        "headers": r.headers,
        "text": text,
        "json": None if is_sse else json.loads(text),
        "events": events,
        "seconds": time.monotonic() - started,
    }


def assert_after_fault(live: LiveServer, reply: dict[str, Any], caplog) -> None:
    """What must hold after every fault: bounded time, no key anywhere, server healthy."""
    assert reply["seconds"] < TIMEOUT_S + MARGIN_S, reply["seconds"]
    assert PROVIDER_KEY not in reply["text"]
    assert PROVIDER_KEY not in caplog.text
    assert PROVIDER_KEY[8:] not in caplog.text  # no partial echo either
    assert httpx.get(live.url + "/health", timeout=10).status_code == 200


# mode, status, message fragment, Retry-After
BEFORE_ANSWER = [
    ("401", 502, "refused the configured key", None),
    ("403", 502, "refused the configured key", None),
    ("429", 503, "rate limiting", "17"),
    ("500", 502, "HTTP 500", None),
    ("502", 502, "HTTP 502", None),
    ("503", 502, "HTTP 503", None),
    ("malformed", 502, "chat provider sent", None),  # JSON: "malformed"; SSE: no events
    ("no_choices", 502, "", None),
    ("empty_content", 502, "empty answer", None),
    ("hang", 504, "chat.timeout_s", None),
    ("slow", 504, "chat.timeout_s", None),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("mode", "status", "fragment", "retry_after"), BEFORE_ANSWER)
def test_fault_before_any_answer_text_is_a_plain_http_error(
    live: LiveServer, provider: FakeOpenAI, caplog, mode, status, fragment, retry_after, stream
):
    caplog.set_level(logging.DEBUG)
    provider.mode = mode
    provider.delay_s = 60.0  # "slow": far beyond the deadline
    reply = ask(live, stream=stream)
    assert reply["status"] == status, reply["text"]
    assert reply["headers"]["content-type"] == "application/json"
    assert fragment in reply["json"]["detail"]
    assert reply["headers"].get("retry-after") == retry_after
    if mode.startswith("5"):
        assert len(provider.requests) == 2  # retried once: the deadline left time for it
    assert_after_fault(live, reply, caplog)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_trickle_is_cut_at_the_total_deadline(
    live: LiveServer, provider: FakeOpenAI, caplog, stream
):
    """One byte every 0.25 s never trips a per-read timeout; the total deadline must."""
    caplog.set_level(logging.DEBUG)
    provider.mode = "trickle"
    reply = ask(live, stream=stream)
    if stream:
        # The first text came at once, so the answer had started: it ends with an error event.
        assert reply["status"] == 200
        events = reply["events"]
        assert events[0][0] == "message" and "delta" in events[0][1]
        assert events[-1][0] == "error" and events[-1][1]["status"] == 504
        assert "total time" in events[-1][1]["detail"]
        assert not any(d.get("done") for _, d in events)
    else:
        assert reply["status"] == 504, reply["text"]
        assert "total time" in reply["json"]["detail"]
    assert reply["seconds"] >= TIMEOUT_S * 0.9  # it was the deadline that ended it
    assert_after_fault(live, reply, caplog)


@pytest.mark.parametrize(
    ("mode", "status", "fragment"),
    [("cut_stream", 502, ""), ("error_event", 502, ""), ("oversized", 502, "oversized")],
)
def test_fault_mid_stream_ends_with_an_error_event(
    live: LiveServer, provider: FakeOpenAI, caplog, mode, status, fragment
):
    caplog.set_level(logging.DEBUG)
    provider.mode = mode
    reply = ask(live, stream=True)
    assert reply["status"] == 200
    events = reply["events"]
    assert events[0][0] == "message" and "delta" in events[0][1]
    assert events[-1][0] == "error" and events[-1][1]["status"] == status
    assert fragment in events[-1][1]["detail"]
    assert not any(d.get("done") for _, d in events)
    assert_after_fault(live, reply, caplog)


def test_oversized_whole_reply_is_502(live: LiveServer, provider: FakeOpenAI, caplog):
    caplog.set_level(logging.DEBUG)
    provider.mode = "oversized"  # a 3 MB answer; the limit for 800 tokens is 1 MiB
    reply = ask(live, stream=False)
    assert reply["status"] == 502 and "oversized" in reply["json"]["detail"]
    assert_after_fault(live, reply, caplog)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_provider_refusing_connections_is_502(
    live: LiveServer, provider: FakeOpenAI, caplog, monkeypatch, stream
):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(
        live.app.state.chat.settings.chat, "base_url", f"http://127.0.0.1:{port}/v1"
    )
    reply = ask(live, stream=stream)
    assert reply["status"] == 502, reply["text"]
    assert "cannot reach the chat provider" in reply["json"]["detail"]
    assert_after_fault(live, reply, caplog)


def test_absurd_stored_times_do_not_poison_chat(live: LiveServer, provider: FakeOpenAI):
    """A legacy row stored before times were bounded (start 1.8e305 s) must not turn /chat on
    its session into a 500: the time is shown as unknown and the question is answered."""
    rows = film(2)
    rows.append({**film(3)[2], "start_time": HUGE, "end_time": HUGE * 10})
    live.app.state.store.save_results("legacy-film", rows, title="Legacy", model="tiny")
    for stream in (False, True):
        reply = ask(live, stream=stream, session="legacy-film")
        assert reply["status"] == 200, reply["text"]
    system = provider.requests[-1]["body"]["messages"][0]["content"]
    assert "--:--:--.------:--:--.--- | 2 |" in system
    assert httpx.get(live.url + "/health", timeout=10).status_code == 200
