"""GPU checks (skipped without CUDA): the tiny checkpoint on every GPU, both placements, and the
server's health reporting the GPUs. Run on a GPU box with ``bash scripts/test.sh -m gpu``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import torch

from qwen_server.contract.constants import ATTRIBUTES
from qwen_server.engine.lifecycle import Engine
from tests.conftest import run_server, test_settings
from tests.payloads import shot
from tests.unit.engine_fixtures import make_shot, tiny_settings

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("placement", ["replicate", "shard", "auto"])
def test_engine_on_cuda(tiny_model_dir: Path, placement: str) -> None:
    settings = tiny_settings(tiny_model_dir, model={"device": "cuda", "placement": placement})
    engine = Engine(settings)
    engine.load()
    assert engine.device == "cuda"
    expected_replicas = torch.cuda.device_count() if placement == "replicate" else None
    if expected_replicas is not None:
        assert engine.replicas == expected_replicas
    shots = [make_shot(i, 1 + i % 5) for i in range(12)]

    async def run() -> list:
        await engine.start()
        try:
            return await engine.analyze(shots)
        finally:
            await engine.stop(timeout=30)

    outputs = asyncio.run(run())
    assert len(outputs) == 12
    for out in outputs:
        assert set(out.scores) == set(ATTRIBUTES)
        assert all(0.0 <= v <= 1.0 for v in out.scores.values())
    info = engine.gpu_info()
    assert len(info) == torch.cuda.device_count()
    assert all(g["memory_total_mb"] and g["name"] for g in info)


def test_health_reports_gpus(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = test_settings(tiny_model_dir, tmp_path, model={"device": "cuda"})
    with run_server(settings) as live:
        health = httpx.get(live.url + "/health").json()
        assert health["device"] == "cuda" and health["gpu_count"] == torch.cuda.device_count()
        with live.client() as c:
            r = c.post("/analyze_batch", json={"shots": [shot(i) for i in range(4)]})
        assert r.status_code == 200, r.text
