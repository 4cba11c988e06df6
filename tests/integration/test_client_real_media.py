"""Real media beside the checkout (../shared/media): hand-read cuts, real codecs, audio-only files.

Every listed hard cut must be found within 0.25 s with the default settings; extra cuts are
reported (``-s`` shows them) and must stay rare.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from client.errors import NoVideoStream
from client.media.audio import AudioTrack
from client.media.features import compute_features
from client.media.probe import probe
from client.media.scan import ShotScanner
from client.options import AudioOptions, ExtractOptions
from client.pipeline.source import ShotSource

MEDIA = Path(__file__).resolve().parents[2] / ".." / "shared" / "media"
CUTS = MEDIA / "cuts.json"
TOLERANCE_S = 0.25

pytestmark = pytest.mark.skipif(
    not CUTS.is_file(),
    reason=f"real media not found at {MEDIA.resolve()} (shared/media beside the checkout)",
)


def _listed() -> dict[str, list[float]]:
    return json.loads(CUTS.read_text()) if CUTS.is_file() else {}


@pytest.mark.parametrize("name", sorted(_listed()) or ["(none)"])
def test_listed_cuts_are_found_with_default_settings(name: str) -> None:
    listed = _listed()[name]
    scanner = ShotScanner(probe(MEDIA / name), ExtractOptions())
    found = [s.shot.start_time for s in scanner][1:]
    missed = [c for c in listed if not any(abs(f - c) <= TOLERANCE_S for f in found)]
    extra = [round(f, 2) for f in found if not any(abs(f - c) <= TOLERANCE_S for c in listed)]
    print(f"{name}: listed {len(listed)}, found {len(found)}, missed {missed}, extra {extra}")
    assert not missed, f"missed cuts {missed}; found {found}"
    assert len(extra) <= max(1, len(listed) // 3), f"too many extra cuts: {extra}"


def test_sintel_shots_carry_audio_features_and_five_frames() -> None:
    prepared = list(ShotSource(probe(MEDIA / "sintel_excerpt_26s.mp4"), ExtractOptions()))
    assert len(prepared) >= 7
    for p in prepared:
        assert len(p.jpegs) == 5 and p.audio_features is not None
        assert p.audio_features["rms_energy_mean"] > 0
        values = [
            x
            for v in p.audio_features.values()
            if v is not None
            for x in (v if isinstance(v, list) else [v])
        ]
        assert all(math.isfinite(x) for x in values)


@pytest.mark.parametrize(
    "name", ["speech_jfk_11s.flac", "music_vibe_ace.ogg", "ambience_humpback.ogg"]
)
def test_audio_only_files_are_refused_clearly(name: str) -> None:
    # music_vibe_ace.ogg carries a cover-art picture stream, which is not a video.
    with pytest.raises(NoVideoStream, match="no video stream") as exc:
        probe(MEDIA / name)
    assert ("cover art" in str(exc.value)) == name.startswith("music")


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("speech_jfk_11s.flac", 1.0, 6.0),
        ("music_vibe_ace.ogg", 10.0, 20.0),
        ("ambience_humpback.ogg", 5.0, 15.0),
    ],
)
def test_real_audio_codecs_decode_to_sane_features(name: str, start: float, end: float) -> None:
    track = AudioTrack(MEDIA / name, AudioOptions()).start()
    try:
        track.advance_video(math.inf)
        samples = track.slice(start, end)
    finally:
        track.close()
    assert track.error is None
    assert len(samples) == int(round((end - start) * 22050))
    feats = compute_features(samples, 22050)
    assert feats["rms_energy_mean"] > 0.005
    assert 100 < feats["spectral_centroid_mean"] < 8000
    if name.startswith("music"):
        assert feats["tempo"] is not None and 40 < feats["tempo"] < 250
