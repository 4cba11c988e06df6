"""Visual signals measured directly from a shot's decoded frames.

These are cheap, model-free measurements that ground the fused scores: what is dark *is* dark
whatever the model says. Frames are downscaled to 64 px first; the statistics below are stable
at that size and it keeps the cost to well under a millisecond per frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..contract.analysis import MeasuredSignals

_SIDE = 64
# Rec. 601 luma weights: the same as JPEG's YCbCr, so "luminance" matches what encoders see.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _small_rgb(frame: Image.Image) -> np.ndarray:
    img = frame.copy()
    img.thumbnail((_SIDE, _SIDE), Image.Resampling.BILINEAR)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _smoothstep(edge0: float, edge1: float, x: float) -> float:
    t = min(max((x - edge0) / (edge1 - edge0), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def measure(frames: Sequence[Image.Image]) -> MeasuredSignals:
    """Measure luminance, darkness, motion, contrast and saturation of a shot, each in [0, 1].

    - luminance: mean Rec. 601 luma.
    - darkness: ``0.6 * (1 - smoothstep(0.05, 0.6, luminance)) + 0.4 * share of pixels with
      luma < 0.15`` — black frames give 1, a mid-grey or brighter frame gives 0.
    - motion: ``1 - exp(-d / 0.08)`` where ``d`` is the mean absolute luma difference between
      consecutive sampled frames (frames are resized to a common size first); identical frames
      give 0, a single frame gives 0.
    - contrast: mean per-frame luma standard deviation / 0.3, clipped.
    - saturation: mean HSV saturation ``(max - min) / max``.
    """
    if not frames:
        raise ValueError("measure() needs at least one frame")
    rgbs = [_small_rgb(f) for f in frames]
    lumas = [rgb @ _LUMA for rgb in rgbs]
    luminance = float(np.mean([y.mean() for y in lumas]))
    dark_share = float(np.mean([(y < 0.15).mean() for y in lumas]))
    darkness = 0.6 * (1.0 - _smoothstep(0.05, 0.6, luminance)) + 0.4 * dark_share

    diffs = []
    for a, b in zip(lumas, lumas[1:], strict=False):
        if a.shape != b.shape:  # frames of one shot should match; resize defensively if not
            b = (
                np.asarray(
                    Image.fromarray((b * 255).astype(np.uint8)).resize(a.shape[::-1]),
                    dtype=np.float32,
                )
                / 255.0
            )
        diffs.append(float(np.abs(a - b).mean()))
    motion = 1.0 - float(np.exp(-np.mean(diffs) / 0.08)) if diffs else 0.0

    contrast = min(float(np.mean([y.std() for y in lumas])) / 0.3, 1.0)
    sats = []
    for rgb in rgbs:
        mx = rgb.max(axis=2)
        mn = rgb.min(axis=2)
        sats.append(float(np.where(mx > 1e-6, (mx - mn) / np.maximum(mx, 1e-6), 0.0).mean()))
    saturation = float(np.mean(sats))

    def clip(x: float) -> float:
        return round(min(max(x, 0.0), 1.0), 4)

    return MeasuredSignals(
        luminance=clip(luminance),
        darkness=clip(darkness),
        motion=clip(motion),
        contrast=clip(contrast),
        saturation=clip(saturation),
    )
