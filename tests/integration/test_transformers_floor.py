"""The engine on older transformers releases: the declared floor and the GPU machine's 5.17.

The main venv runs the newest transformers; this test installs another release (``--no-deps``,
with the huggingface_hub and tokenizers it needs) into a cached ``--target`` directory, puts it
first on ``PYTHONPATH`` and runs a child python that loads the tiny checkpoint through the real
``Engine.load`` path with ``dtype=bfloat16`` and generates one grammar-constrained batch. What
the floor rests on: ``dtype=`` in ``from_pretrained`` and the ``mm_token_type_ids`` generate
input of Qwen2-VL, which first appear in transformers 5.3.0 (5.2.0 has no ``mm_token_type_ids``).

Skipped, with the reason, when the package index cannot be reached; a reachable index whose
install then fails is a failure. Run as a script (``--probe``) it is the child process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The releases tested: name -> the exact pins installed together (--no-deps). The floor's
# huggingface_hub and tokenizers are the newest its metadata allows; 5.17's are the ones the
# GPU machine ships (huggingface_hub 1.33.0, tokenizers 0.23.2).
RELEASES = {
    "floor-5.3.0": ["transformers==5.3.0", "huggingface_hub==1.33.0", "tokenizers==0.22.2"],
    "gpu-machine-5.17.0": [
        "transformers==5.17.0",
        "huggingface_hub==1.33.0",
        "tokenizers==0.23.2",
    ],
}


def _index_host() -> tuple[str, int]:
    """Host and port of the index pip would ask (PIP_INDEX_URL or pip config, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            url = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            url = ""
    parsed = urlparse(url or "https://pypi.org/simple")
    return parsed.hostname or "pypi.org", parsed.port or (80 if parsed.scheme == "http" else 443)


def _index_unreachable() -> str | None:
    """Why the index cannot be reached, or None when a TCP connection to it opens."""
    host, port = _index_host()
    try:
        with socket.create_connection((host, port), timeout=5):
            return None
    except OSError as exc:
        return f"package index {host}:{port} unreachable ({exc})"


def _cache_root() -> Path:
    """Installed releases live beside the venv (kept between runs), else in the temp dir."""
    for base in (Path(sys.prefix) / ".qwen-test-cache", Path(tempfile.gettempdir())):
        root = base / "transformers-releases"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise RuntimeError("no writable cache directory")


def _installed(name: str, pins: list[str]) -> Path:
    """The ``--target`` directory holding ``pins``; installed on first use, then reused."""
    target = _cache_root() / name
    stamp = target / ".pins"
    if stamp.is_file() and stamp.read_text() == "\n".join(pins):
        return target
    reason = _index_unreachable()
    if reason is not None:
        pytest.skip(reason)
    staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=target.parent))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
    cmd += ["--only-binary=:all:", "--target", str(staging), *pins]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"pip install {' '.join(pins)} failed:\n{out.stderr[-2000:]}")
    (staging / ".pins").write_text("\n".join(pins))
    shutil.rmtree(target, ignore_errors=True)  # a stale or half-written one
    staging.rename(target)  # whole or nothing: a killed run leaves only a staging dir
    return target


@pytest.mark.slow
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_engine_runs_on_release(release: str, tiny_model_dir: Path) -> None:
    pins = RELEASES[release]
    target = _installed(release, pins)
    version = pins[0].split("==")[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"  # the checkpoint is local; nothing may be fetched
    out = subprocess.run(
        [sys.executable, __file__, "--probe", str(tiny_model_dir), version, str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, f"engine on transformers {version} failed:\n{out.stderr[-4000:]}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["transformers"] == version
    assert report["model_dtype"] == "torch.bfloat16"  # dtype= was honoured, not fp32
    assert report["shots"] == 3
    assert all(report["complete"]), report  # every answer parsed with every attribute


def _probe(model_dir: str, version: str, target: str) -> None:
    """Child process: the real loading path and one constrained batch on this transformers."""
    import asyncio

    import transformers

    if transformers.__version__ != version or not transformers.__file__.startswith(target):
        raise SystemExit(f"wrong transformers: {transformers.__version__} {transformers.__file__}")
    from qwen_server.contract.constants import ATTRIBUTES
    from qwen_server.engine.lifecycle import Engine
    from tests.unit.engine_fixtures import make_shot, tiny_settings

    settings = tiny_settings(Path(model_dir), model={"dtype": "bfloat16"})
    engine = Engine(settings)  # grammar on: the served configuration
    engine.load()
    shots = [make_shot(i, 1 + i % 3) for i in range(3)]

    async def run() -> list:
        await engine.start()
        try:
            return await engine.analyze(shots)
        finally:
            await engine.stop(timeout=60)

    outputs = asyncio.run(run())
    model = engine.generator(0).model
    complete = [
        set(o.scores) == set(ATTRIBUTES) and all(0.0 <= v <= 1.0 for v in o.scores.values())
        for o in outputs
    ]
    report = {
        "transformers": transformers.__version__,
        "model_dtype": str(next(model.parameters()).dtype),
        "shots": len(outputs),
        "complete": complete,
        "batch_sizes": [o.counts.get("batch_size") for o in outputs],
    }
    print(json.dumps(report))


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--probe":
    _probe(*sys.argv[2:])
