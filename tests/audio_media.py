"""Decode a real recording the way a run does (``AudioTrack``: PyAV, mono, fixed rate), for
tests that need real audio rather than hand-made arrays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from client.media.audio import AudioTrack
from client.options import AudioOptions


def decode_audio(
    path: Path, sr: int = 22050, start: float = 0.0, end: float | None = None
) -> np.ndarray:
    """Mono float32 samples of ``path`` between two times (to the end of the audio when
    ``end`` is None), decoded by the client's own audio path."""
    track = AudioTrack(path, AudioOptions(sample_rate=sr)).start()
    try:
        track.advance_video(math.inf)
        samples = track.slice(start, 24 * 3600.0 if end is None else end)  # waits for the end
        if end is None:  # slice pads past the end with zeros: keep what was decoded
            samples = samples[: max(0, int(round((track.held_seconds - start) * sr)))]
        return samples
    finally:
        track.close()
