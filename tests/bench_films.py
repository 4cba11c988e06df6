"""The shots of the benchmarks' generated 1080p films (``scripts/bench_client.py``,
``scripts/bench_chunked.py``): hard cuts every 1-6 s, random textures, brightness, motion and
audio (tone, noise or silence); the same seed gives the same shots whatever the encoding."""

from __future__ import annotations

import random

from tests.film_factory import PATTERNS, ShotSpec


def random_cut_shots(seconds: float, fps: int = 25, seed: int = 1) -> list[ShotSpec]:
    """Shots filling ``seconds`` of film at ``fps``, each 1-6 s long."""
    rng = random.Random(seed)
    total = int(seconds * fps)
    shots = []
    while total > 0:
        frames = min(total, rng.randint(fps, 6 * fps))
        shots.append(
            ShotSpec(
                frames=frames,
                brightness=rng.uniform(0.1, 0.9),
                pattern=rng.choice(PATTERNS[1:]),
                audio=rng.choice(["tone", "noise", "silence"]),
                tone_hz=rng.choice([220.0, 440.0, 880.0]),
                drift=rng.choice([0.5, 1.0, 2.0]),
            )
        )
        total -= frames
    return shots
