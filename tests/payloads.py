"""Building request payloads from real encoded images (JPEG/PNG through Pillow)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image


def image_b64(
    color: tuple[int, int, int] = (128, 128, 128),
    size: tuple[int, int] = (112, 84),
    *,
    fmt: str = "JPEG",
    noise_seed: int | None = None,
) -> str:
    """A real encoded frame: a flat colour, or seeded noise when ``noise_seed`` is given."""
    if noise_seed is None:
        img = Image.new("RGB", size, color)
    else:
        rng = np.random.default_rng(noise_seed)
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def audio_features(rms: float = 0.05, zcr: float = 0.08, centroid: float = 1800.0) -> dict:
    """A complete, plausible audio_features object."""
    return {
        "mfcc_mean": [float(i) for i in range(13)],
        "mfcc_std": [1.0] * 13,
        "spectral_centroid_mean": centroid,
        "spectral_rolloff_mean": centroid * 2,
        "spectral_bandwidth_mean": 1500.0,
        "zero_crossing_rate_mean": zcr,
        "rms_energy_mean": rms,
        "rms_energy_std": rms * 0.6,
        "chroma_mean": [0.5] * 12,
        "tempo": 0.0,
    }


def shot(shot_id: int, n_frames: int = 3, **extra: Any) -> dict:
    """A valid shot object with distinct noisy frames and audio features."""
    body = {
        "shot_id": shot_id,
        "images": [image_b64(noise_seed=shot_id * 100 + i) for i in range(n_frames)],
        "audio_features": audio_features(),
        "start_time": float(shot_id) * 2.0,
        "end_time": float(shot_id) * 2.0 + 1.5,
    }
    body.update(extra)
    return body
