"""Measured signals and fusion move in the documented directions on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qwen_server.analysis.audio_cues import audio_cues, classify_audio
from qwen_server.analysis.fusion import fuse as fuse_with_evidence
from qwen_server.analysis.signals import measure
from qwen_server.config import FusionSettings
from qwen_server.contract.analysis import AudioFeatures
from qwen_server.contract.constants import ATTRIBUTES


def flat(value: int, size=(96, 64)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def noise(seed: int, size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


NEUTRAL = dict.fromkeys(ATTRIBUTES, 0.5)


def fuse(*args, **kwargs) -> dict[str, float]:
    """The fused scores alone (the six v1 attributes unless a vocabulary is given)."""
    return fuse_with_evidence(*args, **kwargs).scores


def test_black_frames_measure_fully_dark() -> None:
    m = measure([flat(0)] * 5)
    assert m.darkness == pytest.approx(1.0, abs=1e-3)
    assert m.luminance == pytest.approx(0.0, abs=1e-3)
    fused = fuse(NEUTRAL, m, None, FusionSettings())
    assert fused["darkness"] > 0.8


def test_white_frames_are_not_dark() -> None:
    m = measure([flat(255)] * 5)
    assert m.darkness == pytest.approx(0.0, abs=1e-3)
    assert fuse(NEUTRAL, m, None, FusionSettings())["darkness"] < 0.2


def test_darkness_is_monotonic_in_brightness() -> None:
    values = [measure([flat(v)]).darkness for v in (0, 30, 60, 100, 160, 220)]
    assert values == sorted(values, reverse=True)


def test_identical_frames_have_no_motion() -> None:
    frame = noise(1)
    m = measure([frame] * 5)
    assert m.motion == pytest.approx(0.0, abs=1e-6)
    assert fuse(NEUTRAL, m, None, FusionSettings())["motion"] < 0.2


def test_changing_frames_have_motion() -> None:
    # Noise decorrelates frame to frame: the largest change a shot of stills can show.
    m = measure([noise(i) for i in range(5)])
    assert m.motion > 0.5
    half = Image.new("RGB", (64, 64), (0, 0, 0))
    half.paste((255, 255, 255), (0, 0, 32, 64))
    assert measure([half]).contrast > 0.9


def test_single_frame_and_mixed_sizes_are_measured() -> None:
    assert measure([noise(3)]).motion == 0.0
    m = measure([noise(1, (96, 64)), noise(2, (48, 32))])
    assert 0.0 <= m.motion <= 1.0


def test_saturation_separates_grey_from_colour() -> None:
    grey = measure([flat(128)]).saturation
    red = measure([Image.new("RGB", (32, 32), (255, 0, 0))]).saturation
    assert grey == pytest.approx(0.0, abs=1e-3)
    assert red == pytest.approx(1.0, abs=1e-3)


SILENCE = AudioFeatures(rms_energy_mean=0.0005, rms_energy_std=0.0001, zero_crossing_rate_mean=0.3)
SPEECH = AudioFeatures(
    rms_energy_mean=0.05,
    rms_energy_std=0.035,
    zero_crossing_rate_mean=0.09,
    spectral_centroid_mean=1600.0,
)
NOISE = AudioFeatures(
    rms_energy_mean=0.3,
    rms_energy_std=0.01,
    zero_crossing_rate_mean=0.5,
    spectral_centroid_mean=5500.0,
)
MUSIC = AudioFeatures(
    rms_energy_mean=0.08,
    rms_energy_std=0.01,
    zero_crossing_rate_mean=0.05,
    spectral_centroid_mean=1200.0,
    chroma_mean=[0.9, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1, 0.1],
    tempo=118.0,
)
HUM = AudioFeatures(
    rms_energy_mean=0.02,
    rms_energy_std=0.001,
    zero_crossing_rate_mean=0.01,
    spectral_centroid_mean=250.0,
    chroma_mean=[0.5] * 12,
)


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (SILENCE, "silence"),
        (SPEECH, "speech"),
        (NOISE, "loud_action"),
        (MUSIC, "music"),
        (HUM, "ambience"),
    ],
)
def test_audio_class_rules(features: AudioFeatures, expected: str) -> None:
    assert classify_audio(features) == expected


def test_audio_class_unknown_without_rms() -> None:
    assert classify_audio(AudioFeatures(tempo=100.0)) == "unknown"
    assert audio_cues(AudioFeatures(tempo=100.0)) is None
    assert audio_cues(None) is None


def test_intensity_rises_from_silence_to_speech_to_loud_noise() -> None:
    m = measure([flat(128)] * 3)
    settings = FusionSettings()
    levels = [
        fuse(NEUTRAL, m, audio_cues(f), settings)["intensity"] for f in (SILENCE, SPEECH, NOISE)
    ]
    assert levels[0] < levels[1] < levels[2]


def test_audio_fusion_can_be_disabled() -> None:
    m = measure([flat(128)] * 3)
    off = FusionSettings(enable_audio_fusion=False)
    assert fuse(NEUTRAL, m, audio_cues(SILENCE), off) == fuse(NEUTRAL, m, audio_cues(NOISE), off)


def test_zero_weights_return_model_scores() -> None:
    m = measure([flat(0)] * 3)
    w = FusionSettings(temporal_weight=0.0, audio_weight=0.0, measured_weight=0.0)
    scores = {name: 0.1 * (i + 1) for i, name in enumerate(ATTRIBUTES)}
    fused = fuse(scores, m, audio_cues(NOISE), w)
    assert fused == pytest.approx(scores)


def test_fused_scores_stay_in_unit_interval() -> None:
    w = FusionSettings(temporal_weight=0.8, audio_weight=0.2, measured_weight=1.0)
    for frames in ([flat(0)] * 2, [noise(i) for i in range(4)]):
        for f in (SILENCE, SPEECH, NOISE, MUSIC, None):
            fused = fuse({n: 1.0 for n in ATTRIBUTES}, measure(frames), audio_cues(f), w)
            assert set(fused) == set(ATTRIBUTES)
            assert all(0.0 <= v <= 1.0 for v in fused.values())


def test_audio_summary_is_plain_language() -> None:
    cue = audio_cues(MUSIC)
    assert cue is not None
    assert "music" in cue.summary and "BPM" in cue.summary
    assert "silent" in audio_cues(SILENCE).summary


# --- other vocabularies ----------------------------------------------------------------------


def _vocab(*specs: tuple[str, str | None]):
    from qwen_server.contract.vocabulary import AttributeSpec, Vocabulary

    return Vocabulary(tuple(AttributeSpec(name, "d", evidence) for name, evidence in specs))


def test_model_only_attributes_keep_the_models_score_and_say_so() -> None:
    vocab = _vocab(("humor", None), ("decay", None))
    for frames in ([flat(0)] * 3, [noise(i) for i in range(3)]):
        for audio in (None, audio_cues(NOISE)):
            out = fuse_with_evidence(
                {"humor": 0.9, "decay": 0.1}, measure(frames), audio, FusionSettings(), vocab
            )
            assert out.scores == {"humor": 0.9, "decay": 0.1}
            assert out.evidence == {"humor": [], "decay": []}


def test_any_attribute_fuses_with_its_channel_in_the_documented_direction() -> None:
    vocab = _vocab(
        ("gloom", "darkness"),
        ("light", "brightness"),
        ("calm", "stillness"),
        ("colour", "colorfulness"),
        ("fear", "suspense"),
        ("noise", "loudness"),
    )
    neutral = dict.fromkeys(vocab.names, 0.5)
    dark, bright = measure([flat(5)] * 3), measure([flat(250)] * 3)
    moving = measure([noise(i) for i in range(3)])
    w = FusionSettings()
    d = fuse_with_evidence(neutral, dark, None, w, vocab).scores
    b = fuse_with_evidence(neutral, bright, None, w, vocab).scores
    assert d["gloom"] > b["gloom"] and b["light"] > d["light"]
    assert d["fear"] > b["fear"]  # dark and still builds suspense, whatever the name
    assert d["calm"] > fuse_with_evidence(neutral, moving, None, w, vocab).scores["calm"]
    assert fuse_with_evidence(neutral, moving, None, w, vocab).scores["colour"] > d["colour"]
    loud = fuse_with_evidence(neutral, dark, audio_cues(NOISE), w, vocab)
    quiet = fuse_with_evidence(neutral, dark, audio_cues(SILENCE), w, vocab)
    assert loud.scores["noise"] > quiet.scores["noise"]
    assert loud.evidence["fear"] == ["visual:suspense", "audio:suspense"]
    assert loud.evidence["noise"] == ["audio:loudness"] and d["noise"] == 0.5  # no audio: model


def test_the_six_default_to_their_own_channels_exactly_as_before() -> None:
    from qwen_server.contract.vocabulary import DEFAULT_VOCABULARY

    m = measure([noise(i) for i in range(3)])
    by_name = _vocab(*((a, a) for a in ATTRIBUTES))
    for audio in (None, audio_cues(SPEECH)):
        default = fuse_with_evidence(NEUTRAL, m, audio, FusionSettings())
        assert default == fuse_with_evidence(NEUTRAL, m, audio, FusionSettings(), by_name)
        assert list(default.scores) == list(DEFAULT_VOCABULARY.names)
