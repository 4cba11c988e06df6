"""Running ``qwen-client`` as a user does: a real subprocess from the repository root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, token: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m client.cli ARGS`` with ``QWEN_SERVER_TOKEN`` set to ``token`` (removed from
    the environment when None); output captured as text."""
    env = {k: v for k, v in os.environ.items() if k != "QWEN_SERVER_TOKEN"}
    if token is not None:
        env["QWEN_SERVER_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def as_in_a_terminal() -> None:
    """``preexec_fn`` of a client that a test interrupts with SIGINT.

    A command started from a background job (`bash .ci/run &`, nohup) inherits SIGINT
    *ignored*, and Python then installs no KeyboardInterrupt handler, so a test's SIGINT would
    be lost (the run then simply finishes). In a terminal, where a user presses Ctrl-C, SIGINT is
    never ignored: give the client that disposition, as the process it stands for would have it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
