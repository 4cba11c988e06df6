"""Helpers for the engine tests: shots with known content and settings for the tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from qwen_server.config import Settings
from qwen_server.engine.types import ShotInput

REPO_ROOT = Path(__file__).resolve().parents[2]

# Short captions keep CPU generation of the random-weight model quick (it tends to write the
# longest caption the grammar allows).
CAPTION_MAX = 24


def tiny_settings(model_dir: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for the tiny checkpoint on the CPU; ``sections`` override per section."""
    base: dict[str, dict[str, Any]] = {
        "model": {
            "path": str(model_dir),
            "device": "cpu",
            "caption_max_chars": CAPTION_MAX,
            "max_pixels": 112 * 112,
            "min_pixels": 56 * 56,
        },
        "batching": {"max_batch_size": 8, "max_wait_ms": 10},
    }
    for key, values in sections.items():
        base.setdefault(key, {}).update(values)
    return Settings(**base)


def make_shot(
    shot_id: int,
    n_frames: int,
    size: tuple[int, int] = (160, 96),
    *,
    duration: float | None = 2.0,
    audio: str | None = "quiet speech",
) -> ShotInput:
    """A shot of ``n_frames`` deterministic noise frames (seeded by the shot id)."""
    rng = np.random.default_rng(shot_id)
    frames = [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(n_frames)
    ]
    return ShotInput(shot_id=shot_id, frames=frames, duration=duration, audio_summary=audio)


def load_script(name: str) -> Any:
    """Import ``scripts/<name>.py`` as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
