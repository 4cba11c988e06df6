"""schemathesis over the server's own OpenAPI, against the real server on loopback.

Every operation is exercised with generated valid and invalid input (coverage phase: boundary
values; fuzzing phase: at most ``MAX_EXAMPLES`` cases per operation), deterministically, and
every response must be documented: no 5xx, a documented status code, content type, headers
and body schema. The chat provider is the loopback fake so ``/chat`` can answer 200.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen_server.contract.constants import ATTRIBUTES
from tests.conftest import TEST_API_KEY, LiveServer, run_server, test_settings
from tests.fake_openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 15  # per operation in the fuzzing phase (15 operations)
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]


@pytest.fixture
def live(tiny_model_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    with FakeOpenAI() as fake:
        settings = test_settings(
            tiny_model_dir,
            tmp_path,
            chat={"base_url": fake.base_url, "timeout_s": 10.0},
            NEBIUS_API_KEY="provider-key-for-tests",
        )
        with run_server(settings) as server:
            server.app.state.store.save_results(
                "film-1",
                [
                    {
                        "shot_id": 1,
                        "caption": "a dark corridor",
                        "attributes": dict.fromkeys(ATTRIBUTES, 0.5),
                        "start_time": 0.0,
                        "end_time": 2.0,
                        "duration": 2.0,
                    }
                ],
                title="Film",
                model="tiny",
            )
            yield server


def test_schemathesis_finds_no_server_error_or_schema_mismatch(
    live: LiveServer, tmp_path: Path
) -> None:
    st = Path(sys.executable).with_name("schemathesis")
    if not st.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    cmd = [
        str(st),
        "run",
        f"{live.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {TEST_API_KEY}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # same cases every run, no example database
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    run = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    out = run.stdout + run.stderr
    print(out[-2500:])  # the run's summary, shown with -rA / -s
    assert run.returncode == 0, out[-6000:]
    assert "Tested: 15" in out or "15 selected" in out, out[-3000:]
    health = live.client(None).get("/health")
    assert health.status_code == 200, health.text
