"""Fusion: the model's scores blended with measured visual signals and audio cues.

The model sees five still frames; it cannot hear and it guesses motion between stills. Fusion
blends its scores with what was measured, attribute by attribute:

    fused[a] = (1 - wv[a] - wa[a]) * model[a] + wv[a] * visual[a] + wa[a] * audio[a]

where ``visual[a]``/``audio[a]`` are evidence values in [0, 1] and the weights are

- ``darkness`` and ``motion``: ``wv = fusion.measured_weight`` (direct measurements of exactly
  that quantity), no audio term;
- ``intensity``, ``suspense``, ``ambiguity``: ``wv = fusion.temporal_weight``;
- ``intensity``, ``suspense``, ``emotional_tension``: ``wa = fusion.audio_weight`` when
  ``fusion.enable_audio_fusion`` is on and the shot has audio features, else 0.

If the two weights of an attribute add up to more than 1 they are scaled down to sum to 1.
Evidence values (all in [0, 1]):

- visual intensity = 0.6 * motion + 0.4 * contrast
- visual suspense = 0.6 * darkness + 0.4 * (1 - motion)     (dark and still builds suspense)
- visual ambiguity = 0.5 * darkness + 0.5 * (1 - contrast)  (hard to read what is shown)
- audio intensity = 0.7 * loudness + 0.3 * noisiness
- audio suspense = a bump peaking for quiet-but-present sound: 1 - |loudness - 0.35| / 0.65,
  lowered by brightness; silence gives 0.3
- audio emotional_tension = 0.5 * loudness + 0.5 * (1 if music/loud_action, 0.6 speech, 0.3 else)
"""

from __future__ import annotations

from ..config import FusionSettings
from ..contract.analysis import AudioCues, MeasuredSignals
from ..contract.constants import ATTRIBUTES
from .audio_cues import clip


def _visual_evidence(m: MeasuredSignals) -> dict[str, float]:
    return {
        "darkness": m.darkness,
        "motion": m.motion,
        "intensity": 0.6 * m.motion + 0.4 * m.contrast,
        "suspense": 0.6 * m.darkness + 0.4 * (1.0 - m.motion),
        "ambiguity": 0.5 * m.darkness + 0.5 * (1.0 - m.contrast),
    }


def _audio_evidence(a: AudioCues) -> dict[str, float]:
    if a.audio_class == "silence":
        suspense = 0.3
    else:
        suspense = clip(1.0 - abs(a.loudness - 0.35) / 0.65) * (1.0 - 0.3 * a.brightness)
    emphasis = {"music": 1.0, "loud_action": 1.0, "speech": 0.6}.get(a.audio_class, 0.3)
    return {
        "intensity": 0.7 * a.loudness + 0.3 * a.noisiness,
        "suspense": suspense,
        "emotional_tension": 0.5 * a.loudness + 0.5 * emphasis,
    }


def fuse(
    model_scores: dict[str, float],
    measured: MeasuredSignals,
    audio: AudioCues | None,
    weights: FusionSettings,
) -> dict[str, float]:
    """Blend the model's scores with visual and audio evidence (formula in the module doc)."""
    visual = _visual_evidence(measured)
    heard = _audio_evidence(audio) if (audio is not None and weights.enable_audio_fusion) else {}
    fused: dict[str, float] = {}
    for name in ATTRIBUTES:
        model = clip(float(model_scores.get(name, 0.5)))
        wv = 0.0
        if name in visual:
            wv = (
                weights.measured_weight
                if name in ("darkness", "motion")
                else weights.temporal_weight
            )
        wa = weights.audio_weight if name in heard else 0.0
        if wv + wa > 1.0:
            scale = 1.0 / (wv + wa)
            wv, wa = wv * scale, wa * scale
        value = (1.0 - wv - wa) * model + wv * visual.get(name, 0.0) + wa * heard.get(name, 0.0)
        fused[name] = round(clip(value), 4)
    return fused
