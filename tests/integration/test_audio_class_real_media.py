"""Real recordings (../shared/media) through the client's audio features and the server's audio
rules: with the issue-15 fields a speech recording is dialogue, jazz is music (the v1 RMS
burstiness rule calls it speech) and a forest scene of Big Buck Bunny is not speech."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from client.media.features import shot_audio_features
from qwen_server.analysis.audio_cues import audio_cues
from qwen_server.contract.analysis import AudioFeatures

SR = 22050
NEW_FIELDS = {
    "speech_ratio",
    "speech_segments",
    "music_ratio",
    "beat_times",
    "loudness_lufs",
    "loudness_range_lu",
}


def _mono(path: Path, start: float, end: float) -> np.ndarray:
    """The file's audio from ``start`` to ``end`` seconds, mono float at SR."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == "audio")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
    y = np.concatenate(chunks)
    return y[int(start * SR) : int(end * SR)]


def _cues(path: Path, start: float, end: float):
    feats, speech_error = shot_audio_features(_mono(path, start, end), SR, 3.0)
    assert speech_error is None  # silero-vad's model is installed (scripts/setup.sh)
    new = audio_cues(AudioFeatures.model_validate(feats), end - start)
    v1 = audio_cues(
        AudioFeatures.model_validate({k: v for k, v in feats.items() if k not in NEW_FIELDS})
    )
    assert new is not None and v1 is not None
    return new, v1


def test_speech_is_dialogue_with_its_share_and_lufs(shared_media: Path) -> None:
    new, _ = _cues(shared_media / "speech_jfk_11s.flac", 5.0, 11.0)
    assert new.audio_class == "speech"
    assert new.summary.startswith("dialogue (speech ") and "LUFS" in new.summary
    assert new.speech_ratio is not None and new.speech_ratio >= 0.5
    assert new.loudness_lufs is not None


def test_jazz_is_music_where_v1_heard_speech(shared_media: Path) -> None:
    new, v1 = _cues(shared_media / "music_vibe_ace.ogg", 30.0, 36.0)
    assert new.audio_class == "music" and new.summary.startswith("music (")
    assert v1.audio_class == "speech"  # the RMS burstiness proxy: what issue 15 fixes
    assert "beat ~" in new.summary


def test_forest_ambience_is_not_speech(shared_media: Path) -> None:
    new, _ = _cues(shared_media / "bbb_opening_40s.mkv", 10.79, 18.08)  # a shot between cuts
    assert new.audio_class != "speech" and "dialogue" not in new.summary
