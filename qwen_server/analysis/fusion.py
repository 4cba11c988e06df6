"""Fusion: the model's scores blended with measured visual signals and audio cues.

The model sees five still frames; it cannot hear and it guesses motion between stills. Fusion
blends its score of each attribute with the measured evidence of the attribute's *evidence
channel* (``contract.vocabulary.EVIDENCE_CHANNELS``; the six v1 attributes each use the channel
of their own name, an attribute without a channel is the model's score alone):

    fused[a] = (1 - wv - wa) * model[a] + wv * visual[c] + wa * audio[c]      (c = channel of a)

with the weights of channel ``c``:

- ``darkness``, ``motion``, ``brightness``, ``colorfulness``, ``stillness``:
  ``wv = fusion.measured_weight`` (direct measurements of exactly that quantity), no audio term;
- ``intensity``, ``suspense``, ``ambiguity``: ``wv = fusion.temporal_weight``;
- ``intensity``, ``suspense``, ``emotional_tension``, ``loudness``: ``wa = fusion.audio_weight``
  when ``fusion.enable_audio_fusion`` is on and the shot has audio features, else 0.

If the two weights add up to more than 1 they are scaled down to sum to 1. Evidence values (all
in [0, 1]):

- visual darkness / motion / brightness (= luminance) / colorfulness (= saturation): measured
- visual stillness = 1 - motion
- visual intensity = 0.6 * motion + 0.4 * contrast
- visual suspense = 0.6 * darkness + 0.4 * (1 - motion)     (dark and still builds suspense)
- visual ambiguity = 0.5 * darkness + 0.5 * (1 - contrast)  (hard to read what is shown)
- audio loudness (``AudioCues.loudness``) = the level on [0, 1], -60 -> 0, 0 -> 1: integrated
  loudness ``loudness_lufs`` (BS.1770) when the client sent it, else the RMS level in dBFS; the
  loudness channel and every formula below that uses loudness read it
- audio intensity = 0.7 * loudness + 0.3 * noisiness; with ``beat_times`` (and a shot duration)
  and ``music_ratio``: 0.6 * loudness + 0.2 * noisiness + 0.2 * drive, where
  drive = min(beat_density / 3, 1) * music_ratio (beats per second, 3/s = 180 BPM is full drive;
  beats count only as far as the shot is music, because a beat tracker finds "beats" in any
  sound)
- audio suspense = a bump peaking for quiet-but-present sound: 1 - |loudness - 0.35| / 0.65,
  lowered by brightness; silence gives 0.3
- audio emotional_tension = 0.5 * loudness + 0.5 * emphasis; emphasis 1 for loud_action, 0.3
  for silence, else 0.3 + 0.7 * m + 0.3 * s (at most 1) with m = ``music_ratio`` and
  s = ``speech_ratio`` where sent, else 1/0 by the audio class (music: m = 1, speech: s = 1), so
  an older client gets v1's 1 (music), 0.6 (speech), 0.3 (ambience) exactly
- audio loudness = loudness

A shot without the issue-15 fields (older clients) gets exactly the v1 fusion
(``tests/unit/test_audio_v1_compat.py``).

Each result says what went into each score (``ShotResult.evidence``): ``["visual:suspense",
"audio:suspense"]``, or ``[]`` for the model alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import FusionSettings
from ..contract.analysis import AudioCues, MeasuredSignals
from ..contract.vocabulary import DEFAULT_VOCABULARY, EVIDENCE_CHANNELS, Vocabulary
from .audio_cues import clip

# Which weight each channel's visual evidence gets: direct measurements or temporal cues.
_MEASURED = frozenset({"darkness", "motion", "brightness", "colorfulness", "stillness"})
_TEMPORAL = frozenset({"intensity", "suspense", "ambiguity"})
_AUDIO = frozenset({"intensity", "suspense", "emotional_tension", "loudness"})
assert set(EVIDENCE_CHANNELS) == (_MEASURED | _TEMPORAL | _AUDIO), "a rule for every channel"
FULL_DRIVE_BEATS_PER_S = 3.0  # 180 BPM: the beat density that counts as full rhythmic drive


def _visual_evidence(m: MeasuredSignals) -> dict[str, float]:
    return {
        "darkness": m.darkness,
        "motion": m.motion,
        "brightness": m.luminance,
        "colorfulness": m.saturation,
        "stillness": 1.0 - m.motion,
        "intensity": 0.6 * m.motion + 0.4 * m.contrast,
        "suspense": 0.6 * m.darkness + 0.4 * (1.0 - m.motion),
        "ambiguity": 0.5 * m.darkness + 0.5 * (1.0 - m.contrast),
    }


def _emphasis(a: AudioCues) -> float:
    """What the sound adds to emotional tension (module doc): music over speech over the rest."""
    if a.audio_class in ("loud_action", "silence"):
        return 1.0 if a.audio_class == "loud_action" else 0.3
    if a.music_ratio is None and a.speech_ratio is None:  # v1, exactly
        return {"music": 1.0, "speech": 0.6}.get(a.audio_class, 0.3)
    music = a.music_ratio if a.music_ratio is not None else float(a.audio_class == "music")
    speech = a.speech_ratio if a.speech_ratio is not None else float(a.audio_class == "speech")
    return clip(0.3 + 0.7 * music + 0.3 * speech)


def _intensity(a: AudioCues) -> float:
    if a.beat_density is None or a.music_ratio is None:  # v1, exactly
        return 0.7 * a.loudness + 0.3 * a.noisiness
    drive = clip(a.beat_density / FULL_DRIVE_BEATS_PER_S) * a.music_ratio
    return 0.6 * a.loudness + 0.2 * a.noisiness + 0.2 * drive


def _audio_evidence(a: AudioCues) -> dict[str, float]:
    if a.audio_class == "silence":
        suspense = 0.3
    else:
        suspense = clip(1.0 - abs(a.loudness - 0.35) / 0.65) * (1.0 - 0.3 * a.brightness)
    return {
        "intensity": _intensity(a),
        "suspense": suspense,
        "emotional_tension": 0.5 * a.loudness + 0.5 * _emphasis(a),
        "loudness": a.loudness,
    }


@dataclass(frozen=True)
class Fused:
    """Fused scores (the requested attributes in order) and what went into each."""

    scores: dict[str, float]
    evidence: dict[str, list[str]]


def fuse(
    model_scores: dict[str, float],
    measured: MeasuredSignals,
    audio: AudioCues | None,
    weights: FusionSettings,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> Fused:
    """Blend the model's scores with visual and audio evidence (formula in the module doc)."""
    visual = _visual_evidence(measured)
    heard = _audio_evidence(audio) if (audio is not None and weights.enable_audio_fusion) else {}
    scores: dict[str, float] = {}
    evidence: dict[str, list[str]] = {}
    for spec in vocabulary.attributes:
        model = clip(float(model_scores.get(spec.name, 0.5)))
        channel = spec.evidence
        wv = wa = 0.0
        used: list[str] = []
        if channel in _MEASURED:
            wv = weights.measured_weight
        elif channel in _TEMPORAL:
            wv = weights.temporal_weight
        if channel in heard:
            wa = weights.audio_weight
        if wv + wa > 1.0:
            scale = 1.0 / (wv + wa)
            wv, wa = wv * scale, wa * scale
        value = (1.0 - wv - wa) * model
        if wv > 0 and channel is not None:
            value += wv * visual[channel]
            used.append(f"visual:{channel}")
        if wa > 0 and channel is not None:
            value += wa * heard[channel]
            used.append(f"audio:{channel}")
        scores[spec.name] = round(clip(value), 4)
        evidence[spec.name] = used
    return Fused(scores, evidence)
