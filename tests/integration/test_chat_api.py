"""``POST /chat`` on the real server (uvicorn on loopback, tiny real model) with the real
``openai`` client pointed at the fake OpenAI-compatible provider; plus ``qwen-client chat``."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.chat import sse_events
from client.cli import run
from tests.conftest import TEST_API_KEY, LiveServer, run_server, test_settings
from tests.fake_openai_server import FakeOpenAI
from tests.unit.test_chat_vocabulary import TRAILER

PROVIDER_KEY = "sk-nebius-DISTINCTIVE-4b9d27aa"
ATTRS = ("suspense", "darkness", "ambiguity", "emotional_tension", "intensity", "motion")


def trailer_film(ids: range, funniest: int) -> list[dict[str, Any]]:
    """Shots scored on the 38 trailer attributes; ``funniest`` has the top humor score."""
    out = []
    for i in ids:
        scores = {a: round(0.1 + 0.01 * ((i + k) % 40), 2) for k, a in enumerate(TRAILER)}
        scores["humor"] = 0.97 if i == funniest else 0.3
        out.append(
            {
                "shot_id": i,
                "caption": f"caption of shot {i}: "
                + ("a clown falls over" if i == funniest else "a hall"),
                "attributes": scores,
                "audio_class": "music",
                "start_time": i * 2.5,
                "end_time": i * 2.5 + 2.5,
            }
        )
    return out


def film(n: int = 4) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        scores = dict.fromkeys(ATTRS, 0.2)
        scores["suspense"] = round(0.2 + 0.2 * i, 2)
        out.append(
            {
                "shot_id": i,
                "caption": f"caption of shot {i}: "
                + ("a door creaks open" if i == 2 else "a hall"),
                "attributes": scores,
                "audio_class": "silence" if i == 2 else "music",
                "start_time": i * 2.5,
                "end_time": i * 2.5 + 2.5,
            }
        )
    return out


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answer="The creak in shot 2 (00:00:05.000) is the scariest moment.") as f:
        yield f


@pytest.fixture(scope="module")
def live(fake: FakeOpenAI, tiny_model_dir: Path, tmp_path_factory) -> Iterator[LiveServer]:
    settings = test_settings(
        tiny_model_dir,
        tmp_path_factory.mktemp("chat-srv"),
        # The total deadline per answer: long enough that a failure answered at once (and its
        # one retry) is never taken for a timeout on a loaded machine.
        chat={"base_url": fake.base_url, "timeout_s": 6.0},
        NEBIUS_API_KEY=PROVIDER_KEY,
    )
    with run_server(settings) as server:
        store = server.app.state.store
        store.save_results("night-film", film(), title="Night", model="tiny")
        # A session mixing vocabularies: shots 0-3 on the six, 4-7 on the 38 trailer attributes.
        store.save_results("mixed-film", film(), title="Mixed", model="tiny")
        store.save_results("mixed-film", trailer_film(range(4, 8), 6), title=None, model="tiny")
        yield server


@pytest.fixture
def provider(fake: FakeOpenAI) -> FakeOpenAI:
    fake.mode = "ok"
    fake.retry_after = "17"
    fake.delay_s = 20.0  # "slow" / "stall_stream": well past chat.timeout_s
    fake.requests.clear()
    return fake


def sse(response: httpx.Response) -> list[tuple[str, dict]]:
    return [(e, json.loads(d)) for e, d in sse_events(response.iter_lines())]


# --- answers ---------------------------------------------------------------------------------


def test_chat_about_a_session(live: LiveServer, provider: FakeOpenAI):
    with live.client() as c:
        r = c.post(
            "/chat", json={"session_id": "night-film", "question": "Which shot is scariest?"}
        )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "answer": provider.answer,
        "model": "fake/model",
        "session_id": "night-film",
        "shots_in_context": 4,
        "shots_total": 4,
        "cited_shots": [2],
    }
    body = provider.requests[-1]["body"]
    system = body["messages"][0]["content"]
    assert "FILM: Night - 4 shots" in system
    assert "00:00:05.000-00:00:07.500 | 2 | 0.60 0.20 0.20 0.20 0.20 0.20 | silence | " in system
    assert "caption of shot 2: a door creaks open" in system
    assert body["messages"][-1] == {"role": "user", "content": "Which shot is scariest?"}


def test_chat_with_inline_results_and_history(live: LiveServer, provider: FakeOpenAI):
    history = [
        {"role": "user", "content": "Is there a door?"},
        {"role": "assistant", "content": "Yes, in shot 2."},
    ]
    # Local result files may spell the times start/end.
    results = []
    for s in film(3):
        s["start"], s["end"] = s.pop("start_time"), s.pop("end_time")
        results.append(s)
    with live.client() as c:
        r = c.post("/chat", json={"results": results, "question": "When?", "history": history})
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] is None and r.json()["shots_total"] == 3
    messages = provider.requests[-1]["body"]["messages"]
    assert messages[1:] == [*history, {"role": "user", "content": "When?"}]
    assert "00:00:05.000-00:00:07.500 | 2 |" in messages[0]["content"]


def test_streamed_answer(live: LiveServer, provider: FakeOpenAI):
    with (
        live.client() as c,
        c.stream(
            "POST",
            "/chat",
            json={"session_id": "night-film", "question": "scariest?", "stream": True},
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r)
    deltas = [d["delta"] for e, d in events if e == "message" and "delta" in d]
    assert len(deltas) > 1 and "".join(deltas) == provider.answer
    assert events[-1] == (
        "message",
        {
            "done": True,
            "model": "fake/model",
            "session_id": "night-film",
            "shots_in_context": 4,
            "shots_total": 4,
            "cited_shots": [2],
        },
    )
    assert provider.requests[-1]["body"]["stream"] is True


# --- provider failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "retry_after"),
    [
        ("401", 502, None),
        ("403", 502, None),
        ("429", 503, "17"),
        ("slow", 504, None),
        ("500", 502, None),
        ("malformed", 502, None),
        ("no_choices", 502, None),
        ("empty_content", 502, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_provider_failures_map_and_never_show_the_key(
    live: LiveServer, provider: FakeOpenAI, caplog, mode, status, retry_after, stream
):
    caplog.set_level(logging.DEBUG)
    provider.mode = mode
    body = {"session_id": "night-film", "question": "scariest?", "stream": stream}
    with live.client() as c, c.stream("POST", "/chat", json=body) as r:
        r.read()
    assert PROVIDER_KEY not in r.text
    # Streaming or not, a failure before any answer text is a plain HTTP error.
    assert r.status_code == status, r.text
    assert r.headers.get("retry-after") == retry_after
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"]
    assert PROVIDER_KEY not in caplog.text


@pytest.mark.parametrize(
    ("mode", "status"), [("stall_stream", 504), ("cut_stream", 502), ("error_event", 502)]
)
def test_failure_mid_stream_is_an_error_event(
    live: LiveServer, provider: FakeOpenAI, caplog, mode, status
):
    provider.mode = mode
    body = {"session_id": "night-film", "question": "scariest?", "stream": True}
    with live.client() as c, c.stream("POST", "/chat", json=body) as r:
        assert r.status_code == 200
        events = sse(r)
    assert events[0][0] == "message" and "delta" in events[0][1]
    assert events[-1][0] == "error" and events[-1][1]["status"] == status
    assert not any(d.get("done") for _, d in events)
    assert PROVIDER_KEY not in caplog.text


def test_no_provider_key_is_503_naming_the_setting(live: LiveServer, provider, monkeypatch):
    monkeypatch.setattr(live.app.state.chat.settings, "nebius_api_key", None)
    with live.client() as c:
        r = c.post("/chat", json={"session_id": "night-film", "question": "q"})
    assert r.status_code == 503
    assert "NEBIUS_API_KEY" in r.json()["detail"]
    assert provider.requests == []


# --- caller vocabularies ---------------------------------------------------------------------


def table_of(system: str) -> tuple[list[str], dict[int, list[str]]]:
    """The table's score columns and each row's scores, by shot id."""
    header = next(line for line in system.splitlines() if line.startswith("time | shot | "))
    rows = {
        int(line.split(" | ")[1]): line.split(" | ")[2].split()
        for line in system.splitlines()
        if line[:2].isdigit() and line.count(" | ") == 4
    }
    return header.split(" | ")[2].split(), rows


def test_chat_about_a_session_mixing_vocabularies(live: LiveServer, provider: FakeOpenAI):
    with live.client() as c:
        r = c.post(
            "/chat", json={"session_id": "mixed-film", "question": "Which shots are funniest?"}
        )
    assert r.status_code == 200, r.text
    assert r.json()["shots_total"] == 8
    system = provider.requests[-1]["body"]["messages"][0]["content"]
    cols, rows = table_of(system)
    assert cols == ["sus", "dark", "amb", "tens", "int", "mot", "humo"]
    assert "humo=humor" in system and "all 39 attributes" in system  # the six + 33 new
    assert rows[1][cols.index("humo")] == "-" and rows[5][cols.index("tens")] == "-"
    assert rows[6][cols.index("humo")] == "0.97"
    assert "humor (4 of 8 shots) | 0.47 | 0.97 (shot 6, 00:00:15.000)" in system


def test_chat_with_inline_38_attribute_results(live: LiveServer, provider: FakeOpenAI):
    body = {"results": trailer_film(range(20), 13), "question": "where is the humour?"}
    with live.client() as c:
        r = c.post("/chat", json=body)
    assert r.status_code == 200, r.text
    system = provider.requests[-1]["body"]["messages"][0]["content"]
    cols, rows = table_of(system)
    assert "humo" in cols and len(cols) <= 8 and len(rows) == 20
    assert rows[13][cols.index("humo")] == "0.97"
    assert all(f"\n{a} | " in system for a in TRAILER)  # the summary has all 38


@pytest.mark.parametrize(
    ("attributes", "where", "says"),
    [
        ({"Humor!": 0.5}, "Humor!", "invalid attribute name"),
        ({"humor": 1.5}, "humor", "less than or equal to 1"),
        ({"humor": "high"}, "humor", "valid number"),
        ({f"a{i}": 0.5 for i in range(65)}, None, "at most 64"),
    ],
)
def test_bad_inline_attributes_are_422_naming_the_attribute(
    live: LiveServer, provider: FakeOpenAI, attributes: dict, where: str | None, says: str
):
    shots = film(2)
    shots[1]["attributes"] = attributes
    with live.client() as c:
        r = c.post("/chat", json={"results": shots, "question": "q"})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    expected = ["body", "results", 1, "attributes"] + ([where] if where else [])
    assert error["loc"] == expected and says in error["msg"]
    assert provider.requests == []


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"session_id": "night-film", "question": "   "}, 422),
        ({"session_id": "night-film", "question": "x" * 4001}, 422),
        ({"session_id": "night-film"}, 422),
        ({"question": "q"}, 422),
        ({"session_id": "night-film", "results": film(1), "question": "q"}, 422),
        ({"results": [], "question": "q"}, 422),
        ({"session_id": "bad id!", "question": "q"}, 422),
        ({"session_id": "no-such-film", "question": "q"}, 404),
        (
            {
                "session_id": "night-film",
                "question": "q",
                "history": [{"role": "system", "content": "x"}],
            },
            422,
        ),
        (
            {
                "session_id": "night-film",
                "question": "q",
                "history": [{"role": "user", "content": "x"}] * 21,
            },
            422,
        ),
        ({"results": film(2) + film(1), "question": "q"}, 422),
    ],
)
def test_bad_chat_requests(live: LiveServer, provider: FakeOpenAI, body: dict, status: int):
    with live.client() as c:
        r = c.post("/chat", json=body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert provider.requests == []


def test_chat_needs_the_bearer_key(live: LiveServer, provider: FakeOpenAI):
    with live.client(None) as c:
        r = c.post("/chat", json={"session_id": "night-film", "question": "q"})
    assert r.status_code == 401 and provider.requests == []


# --- the client CLI --------------------------------------------------------------------------


def cli(*argv: str) -> int:
    return run(["chat", *argv])


@pytest.fixture
def token_env(monkeypatch) -> None:
    monkeypatch.setenv("QWEN_SERVER_TOKEN", TEST_API_KEY)


def test_cli_streams_the_answer_for_a_session(live, provider, token_env, capsys):
    assert cli("--server", live.url, "--session", "night-film", "Which is scariest?") == 0
    out, err = capsys.readouterr()
    assert out == provider.answer + "\n"
    assert "cited shots: 2" in err and "4 of 4 shots" in err
    assert TEST_API_KEY not in out + err
    assert provider.requests[-1]["body"]["stream"] is True


def test_cli_sends_local_results_inline(live, provider, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = [
        {
            "shot_id": s["shot_id"],
            "start": s["start_time"],
            "end": s["end_time"],
            "caption": s["caption"],
            "attributes": s["attributes"],
            "audio_class": s["audio_class"],
        }
        for s in film(3)
    ]
    (run_dir / "shots.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    token_file = tmp_path / "token"
    token_file.write_text(f"# server key\n{TEST_API_KEY}\n")
    monkeypatch.delenv("QWEN_SERVER_TOKEN", raising=False)
    code = cli(
        "--server",
        live.url,
        "--results",
        str(run_dir),
        "--token-file",
        str(token_file),
        "--no-stream",
        "When does the door open?",
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == provider.answer + "\n"
    system = provider.requests[-1]["body"]["messages"][0]["content"]
    assert "00:00:05.000-00:00:07.500 | 2 |" in system
    assert TEST_API_KEY not in out + err


def test_cli_sends_every_attribute_of_local_results(live, provider, token_env, tmp_path, capsys):
    run_dir = tmp_path / "run38"
    run_dir.mkdir()
    lines = trailer_film(range(10), 7)
    lines[3]["attributes"]["note"] = "not a score"  # dropped by the client, not a 422
    lines[4]["attributes"]["humor"] = None  # not scored
    (run_dir / "shots.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code = cli("--server", live.url, "--results", str(run_dir), "--no-stream", "Funniest shot?")
    out, err = capsys.readouterr()
    assert code == 0, err
    system = provider.requests[-1]["body"]["messages"][0]["content"]
    cols, rows = table_of(system)
    assert "humo" in cols and rows[7][cols.index("humo")] == "0.97"
    assert rows[4][cols.index("humo")] == "-"
    assert "humor (9 of 10 shots)" in system and "note" not in system


def test_cli_exit_codes(live, provider, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QWEN_SERVER_TOKEN", "wrong-token-1234")
    assert cli("--server", live.url, "--session", "night-film", "q") == 4
    err = capsys.readouterr().err
    assert "authentication failed" in err and "wrong-token-1234" not in err
    assert err.count("\n") == 1 and "Traceback" not in err

    monkeypatch.setenv("QWEN_SERVER_TOKEN", TEST_API_KEY)
    assert cli("--server", live.url, "--session", "no-such-film", "q") == 2
    assert "session not found" in capsys.readouterr().err
    assert cli("--server", live.url, "--results", str(tmp_path / "missing"), "q") == 2
    assert cli("--server", "ftp://x", "--session", "night-film", "q") == 2
    assert cli("--server", live.url, "--session", "night-film", "  ") == 2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert cli("--server", f"http://127.0.0.1:{closed}", "--session", "night-film", "q") == 3
    assert "cannot reach the server" in capsys.readouterr().err

    provider.mode = "429"
    assert cli("--server", live.url, "--session", "night-film", "q") == 5
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "retry after 17 s" in err

    provider.mode = "stall_stream"
    assert cli("--server", live.url, "--session", "night-film", "q") == 5
    out, err = capsys.readouterr()
    assert out.endswith("\n") and "mid-answer (HTTP 504)" in err
    for text in (out, err):
        assert TEST_API_KEY not in text and PROVIDER_KEY not in text
