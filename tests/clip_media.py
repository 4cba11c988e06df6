"""Short real video clips for the per-shot ``video`` input, written by the film factory."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.film_factory import FilmTruth, ShotSpec, make_film

# Container suffix -> video codec: the three containers the issue names, three codecs.
CLIP_FORMATS: dict[str, str] = {".mp4": "libx264", ".webm": "libvpx-vp9", ".mkv": "mpeg4"}


def ramp_clip(path: Path, frames: int = 30, size: tuple[int, int] = (160, 120)) -> FilmTruth:
    """A silent clip whose every frame is a flat grey one step brighter than the one before, so
    the frame a sample came from can be told from its picture."""
    codec = CLIP_FORMATS[path.suffix]
    shots = [
        ShotSpec(
            frames=1,
            brightness=0.05 + 0.9 * i / max(1, frames - 1),
            pattern="flat",
            audio=None,
            drift=0.0,
        )
        for i in range(frames)
    ]
    return make_film(path, shots, video_codec=codec, size=size)


def b64_file(path: Path) -> str:
    """The file's bytes as base64 text, as a caller sends a clip."""
    return base64.b64encode(path.read_bytes()).decode()
