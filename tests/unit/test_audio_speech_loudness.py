"""Issue 15 on the server: measured speech and music shares, beat times and BS.1770 loudness
decide the audio class, the prompt's audio line and the audio evidence of fusion.

The feature sets are the ones of ``test_signals_fusion`` (each a clear case of one v1 rule) with
the new fields added, so every test shows what a new field changes against the v1 rule.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from qwen_server.analysis.audio_cues import (
    LOUD_LUFS,
    LOUD_RMS,
    SILENCE_LUFS,
    SILENCE_RMS,
    audio_cues,
    beat_density,
    classify_audio,
)
from qwen_server.analysis.fusion import fuse
from qwen_server.config import FusionSettings
from qwen_server.contract.analysis import AudioFeatures, MeasuredSignals, ShotIn
from qwen_server.contract.vocabulary import DEFAULT_VOCABULARY, AttributeSpec, Vocabulary
from qwen_server.engine.prompts import instructions

SPEECH = dict(
    rms_energy_mean=0.05,
    rms_energy_std=0.035,
    zero_crossing_rate_mean=0.09,
    spectral_centroid_mean=1600.0,
)
NOISE = dict(
    rms_energy_mean=0.3,
    rms_energy_std=0.01,
    zero_crossing_rate_mean=0.5,
    spectral_centroid_mean=5500.0,
)
MUSIC = dict(
    rms_energy_mean=0.08,
    rms_energy_std=0.01,
    zero_crossing_rate_mean=0.05,
    spectral_centroid_mean=1200.0,
    chroma_mean=[0.9, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1, 0.1],
    tempo=118.0,
)
HUM = dict(
    rms_energy_mean=0.02,
    rms_energy_std=0.001,
    zero_crossing_rate_mean=0.01,
    spectral_centroid_mean=250.0,
    chroma_mean=[0.5] * 12,
)
MEASURED = MeasuredSignals(luminance=0.4, darkness=0.6, motion=0.3, contrast=0.5, saturation=0.4)


def cls(base: dict, **new) -> str:
    return classify_audio(AudioFeatures(**base, **new))


def cue(base: dict, duration: float | None = None, **new):
    c = audio_cues(AudioFeatures(**base, **new), duration)
    assert c is not None
    return c


# --- audio class ------------------------------------------------------------------------------


def test_speech_ratio_decides_speech_both_ways() -> None:
    assert cls(SPEECH) == "speech" and cls(HUM) == "ambience"  # the v1 burstiness rule
    assert cls(HUM, speech_ratio=0.8) == "speech"  # steady level, but silero-vad heard speech
    assert cls(SPEECH, speech_ratio=0.05) == "ambience"  # bursty, but no speech was heard
    assert cls(HUM, speech_ratio=0.3) == "speech"  # the threshold counts as speech
    assert cls(HUM, speech_ratio=0.29) == "ambience"


def test_loud_action_wins_over_speech() -> None:
    assert cls(NOISE, speech_ratio=0.9) == "loud_action"


def test_music_ratio_decides_music_both_ways() -> None:
    assert cls(MUSIC) == "music"  # v1: a tempo or a peaked chroma
    assert cls(MUSIC, music_ratio=0.1) == "ambience"  # a tracked tempo is not music by itself
    assert cls(HUM, music_ratio=0.7) == "music"
    assert cls(HUM, music_ratio=0.5) == "music" and cls(HUM, music_ratio=0.49) == "ambience"
    # Dialogue over score is dialogue: speech is decided first.
    assert cls(MUSIC, speech_ratio=0.6, music_ratio=0.9) == "speech"


def test_lufs_decides_silence_and_loud_when_sent() -> None:
    quiet_rms = {**HUM, "rms_energy_mean": SILENCE_RMS / 2}
    assert cls(quiet_rms) == "silence"
    assert cls(quiet_rms, loudness_lufs=-35.0) == "ambience"  # gated loudness: audible
    assert cls(HUM, loudness_lufs=SILENCE_LUFS - 0.5) == "silence"
    assert cls(HUM, loudness_lufs=SILENCE_LUFS) == "ambience"
    # A null LUFS (gated silence or a window under 0.4 s) leaves the decision to RMS.
    assert cls(quiet_rms, loudness_lufs=None) == "silence"
    assert cls(HUM, loudness_lufs=None) == "ambience"
    soft_noise = {**NOISE, "rms_energy_mean": LOUD_RMS / 2}
    assert cls(soft_noise) != "loud_action"
    assert cls(soft_noise, loudness_lufs=LOUD_LUFS) == "loud_action"
    assert cls(NOISE, loudness_lufs=LOUD_LUFS - 6) != "loud_action"


def test_lufs_thresholds_are_the_rms_thresholds_of_a_1khz_tone() -> None:
    """BS.1770 via pyloudnorm (the client's meter): a 1 kHz sine at the RMS thresholds measures
    the LUFS thresholds, so the two rules agree where both can be measured."""
    import pyloudnorm

    sr = 22050
    t = np.arange(4 * sr) / sr
    meter = pyloudnorm.Meter(sr)
    for rms, lufs in ((SILENCE_RMS, SILENCE_LUFS), (LOUD_RMS, LOUD_LUFS)):
        tone = rms * math.sqrt(2) * np.sin(2 * math.pi * 1000.0 * t)
        assert meter.integrated_loudness(tone) == pytest.approx(lufs, abs=0.6)


# --- cues and the prompt's audio line ---------------------------------------------------------


def test_loudness_cue_reads_lufs_on_the_db_scale() -> None:
    assert cue(HUM, loudness_lufs=-60.0).loudness == 0.0
    assert cue(HUM, loudness_lufs=-30.0).loudness == 0.5
    assert cue(NOISE, loudness_lufs=0.0).loudness == 1.0
    assert cue(HUM, loudness_lufs=-80.0).loudness == 0.0  # below the scale: clipped
    v1 = cue(HUM)
    assert v1.loudness == pytest.approx((20 * math.log10(0.02) + 60) / 60, abs=1e-4)
    assert cue(HUM, loudness_lufs=None).loudness == v1.loudness


def test_summary_says_dialogue_lufs_beat_and_range() -> None:
    line = cue(HUM, speech_ratio=0.8, loudness_lufs=-23.4, loudness_range_lu=7.2, tempo=96.0)
    assert line.summary == (
        "dialogue (speech 80 % of the shot), moderate (-23 LUFS), dark, bassy sound, "
        "beat ~96 BPM, loudness range 7 LU"
    )
    assert cue(SPEECH).summary.startswith("speech, ")  # v1 wording without speech_ratio
    music = cue(MUSIC, speech_ratio=0.15, music_ratio=0.75).summary
    assert music.startswith("music (75 % of the shot), ")
    assert "some dialogue (speech 15 % of the shot)" in music and "beat ~118 BPM" in music
    assert "music 40 % of the shot" in cue(HUM, music_ratio=0.4).summary
    assert "dialogue" not in cue(HUM, speech_ratio=0.05).summary  # too little to mention
    # Where the music share is measured, a tracked beat is only mentioned with some music.
    assert "BPM" not in cue(SPEECH, tempo=117.0, speech_ratio=0.8, music_ratio=0.1).summary
    assert "beat ~117 BPM" in cue(SPEECH, tempo=117.0, music_ratio=0.2).summary
    assert "beat ~117 BPM" in cue(SPEECH, tempo=117.0).summary  # v1
    assert "dBFS" in cue(HUM).summary and "LUFS" not in cue(HUM).summary


def test_summary_reaches_the_prompt() -> None:
    line = cue(HUM, speech_ratio=0.8, loudness_lufs=-23.0).summary
    text = instructions(n_frames=2, duration=3.0, audio_summary=line, caption_max_chars=100)
    assert "Audio: dialogue (speech 80 % of the shot), moderate (-23 LUFS)" in text


def test_cues_echo_the_new_evidence() -> None:
    c = cue(HUM, 4.0, speech_ratio=0.5, music_ratio=0.25, loudness_lufs=-30.0,
            loudness_range_lu=3.0, beat_times=[0.5, 1.0, 1.5, 2.0, 5.0])  # fmt: skip
    assert (c.speech_ratio, c.music_ratio, c.loudness_lufs, c.loudness_range_lu) == (
        0.5, 0.25, -30.0, 3.0,
    )  # fmt: skip
    assert c.beat_density == 1.0  # 4 beats in the shot's 4 s; the one at 5 s lies outside


def test_beat_density_needs_beats_and_a_duration() -> None:
    f = AudioFeatures(**MUSIC, beat_times=[0.0, 0.5, 1.0])
    assert beat_density(f, 1.5) == 2.0
    assert beat_density(f, None) is None and beat_density(f, 0.0) is None
    assert beat_density(AudioFeatures(**MUSIC), 3.0) is None
    assert beat_density(AudioFeatures(**MUSIC, beat_times=[]), 3.0) == 0.0


# --- fusion -----------------------------------------------------------------------------------

CHANNELS = Vocabulary(
    tuple(AttributeSpec(c, "d", c) for c in ("intensity", "emotional_tension", "loudness"))
)


def audio_score(c, channel: str) -> float:
    """The fused score of ``channel`` with the model at 0 and no visual term: the audio term."""
    w = FusionSettings(temporal_weight=0.0, audio_weight=1.0)
    return fuse(dict.fromkeys(CHANNELS.names, 0.0), MEASURED, c, w, CHANNELS).scores[channel]


def test_loudness_channel_follows_lufs_not_rms() -> None:
    # Same RMS, different measured loudness (e.g. rumble the K-weighting discounts).
    soft = audio_score(cue(MUSIC, loudness_lufs=-45.0), "loudness")
    loud = audio_score(cue(MUSIC, loudness_lufs=-12.0), "loudness")
    assert soft == 0.25 and loud == 0.8
    assert audio_score(cue(MUSIC), "loudness") == cue(MUSIC).loudness


def test_emotional_tension_grows_with_music_and_speech_shares() -> None:
    base = {**HUM, "loudness_lufs": -30.0}  # loudness 0.5: tension = 0.25 + 0.5 * emphasis
    tension = [
        audio_score(cue(base, music_ratio=m, speech_ratio=0.0), "emotional_tension")
        for m in (0.0, 0.25, 0.5, 1.0)
    ]
    assert tension == sorted(tension) and tension[0] == pytest.approx(0.25 + 0.5 * 0.3)
    assert tension[-1] == pytest.approx(0.25 + 0.5 * 1.0)
    dialogue = audio_score(cue(base, speech_ratio=1.0, music_ratio=0.0), "emotional_tension")
    assert dialogue == pytest.approx(0.25 + 0.5 * 0.6)  # v1's speech emphasis, at full speech
    # Only one ratio sent: the class stands in for the other (HUM with tempo is music by v1).
    music_by_rule = audio_score(
        cue({**base, "tempo": 100.0}, speech_ratio=0.0), "emotional_tension"
    )
    assert music_by_rule == pytest.approx(0.25 + 0.5 * 1.0)
    loud = audio_score(cue(NOISE, speech_ratio=0.0, music_ratio=0.0), "emotional_tension")
    assert loud == pytest.approx(0.5 * cue(NOISE).loudness + 0.5, abs=1e-4)  # loud action: 1


def test_intensity_counts_beats_only_as_far_as_the_shot_is_music() -> None:
    beats = [i * 0.25 for i in range(16)]  # 4 beats/s over 4 s: full drive
    score = {
        m: audio_score(cue(MUSIC, 4.0, beat_times=beats, music_ratio=m), "intensity")
        for m in (0.0, 0.5, 1.0)
    }
    assert score[0.0] < score[0.5] < score[1.0]
    sparse = audio_score(cue(MUSIC, 4.0, beat_times=beats[::4], music_ratio=1.0), "intensity")
    assert sparse < score[1.0]
    c = cue(MUSIC)
    assert audio_score(c, "intensity") == round(0.7 * c.loudness + 0.3 * c.noisiness, 4)  # v1
    no_duration = cue(MUSIC, None, beat_times=beats, music_ratio=1.0)
    assert audio_score(no_duration, "intensity") == audio_score(c, "intensity")


def test_default_vocabulary_stays_in_range_with_every_new_field() -> None:
    c = cue(NOISE, 2.0, speech_ratio=1.0, music_ratio=1.0, loudness_lufs=10.0,
            loudness_range_lu=100.0, beat_times=[i * 0.01 for i in range(200)])  # fmt: skip
    for model in (0.0, 1.0):
        out = fuse(dict.fromkeys(DEFAULT_VOCABULARY.names, model), MEASURED, c, FusionSettings())
        assert all(0.0 <= v <= 1.0 for v in out.scores.values())


# --- contract ---------------------------------------------------------------------------------

GOOD = {
    "speech_ratio": 0.4,
    "speech_segments": [{"start": 0.0, "end": 0.8}, {"start": 0.8, "end": 1.5}],
    "music_ratio": 0.0,
    "beat_times": [0.1, 0.6, 0.6, 1.1],
    "loudness_lufs": -23,
    "loudness_range_lu": 0,
}


def test_the_new_fields_validate_and_parse() -> None:
    f = AudioFeatures.model_validate_json(json.dumps({**SPEECH, **GOOD}))
    assert f.speech_segments is not None and f.speech_segments[1].start == 0.8
    assert f.loudness_lufs == -23.0 and f.beat_times == [0.1, 0.6, 0.6, 1.1]
    assert AudioFeatures(**SPEECH, speech_segments=[], beat_times=[]).speech_segments == []


BAD: list[tuple[str, object, str]] = [
    ("speech_ratio", 1.01, "less than or equal to 1"),
    ("speech_ratio", -0.1, "greater than or equal to 0"),
    ("speech_ratio", True, "valid number"),
    ("music_ratio", "0.5", "valid number"),
    ("music_ratio", 2, "less than or equal to 1"),
    ("speech_segments", [{"start": 1.0, "end": 1.0}], "start (1.0) must be before end (1.0)"),
    ("speech_segments", [{"start": -1.0, "end": 1.0}], "greater than or equal to 0"),
    ("speech_segments", [{"start": 0.0}], "Field required"),
    ("speech_segments", [{"start": 0, "end": 2}, {"start": 1, "end": 3}], "non-overlapping"),
    ("speech_segments", [{"start": 2, "end": 3}, {"start": 0, "end": 1}], "sorted"),
    ("speech_segments", [{"start": i, "end": i + 0.5} for i in range(65)], "at most 64"),
    ("speech_segments", {"start": 0, "end": 1}, "valid array"),
    ("beat_times", [0.5, 0.4], "non-decreasing"),
    ("beat_times", [-0.1], "greater than or equal to 0"),
    ("beat_times", [0.01 * i for i in range(513)], "at most 512"),
    ("beat_times", ["0.5"], "valid number"),
    ("loudness_lufs", -121.0, "greater than or equal to -120"),
    ("loudness_lufs", 10.5, "less than or equal to 10"),
    ("loudness_lufs", False, "valid number"),
    ("loudness_range_lu", -0.5, "greater than or equal to 0"),
    ("loudness_range_lu", 100.5, "less than or equal to 100"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_values_name_the_field(field: str, value: object, message: str) -> None:
    body = {"shot_id": 1, "images": ["x"], "audio_features": {**SPEECH, field: value}}
    with pytest.raises(ValidationError) as err:
        ShotIn.model_validate_json(json.dumps(body))
    errors = err.value.errors()
    assert errors[0]["loc"][:2] == ("audio_features", field)
    assert message in errors[0]["msg"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["speech_ratio", "loudness_lufs", "loudness_range_lu"])
def test_non_finite_values_are_refused(field: str, token: str) -> None:
    raw = f'{{"shot_id": 1, "images": ["x"], "audio_features": {{"{field}": {token}}}}}'
    with pytest.raises(ValidationError, match=field):
        ShotIn.model_validate_json(raw)
    beats = '{"shot_id": 1, "images": ["x"], "audio_features": {"beat_times": [0.5, %s]}}'
    with pytest.raises(ValidationError, match="beat_times"):
        ShotIn.model_validate_json(beats % token)
