"""Audio cues and the fusion of model scores with measured evidence.

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

import math

from .config import FusionSettings
from .schemas import ATTRIBUTES, AudioCues, AudioFeatures, MeasuredSignals

# Thresholds of the audio-class rules (RMS is on full scale 1.0 mono, ZCR per sample).
SILENCE_RMS = 0.004  # ≈ -48 dBFS: below this nothing audible is happening
LOUD_RMS = 0.12  # ≈ -18 dBFS: a loud mix
NOISY_ZCR = 0.15  # broadband noise / hiss / crashes
BRIGHT_CENTROID_HZ = 3500.0
SPEECH_CENTROID_HZ = (300.0, 3500.0)
SPEECH_ZCR = (0.02, 0.2)
BURSTY = 0.45  # rms_std / rms_mean: speech pauses between syllables and words


def _clip(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _loudness(rms: float) -> float:
    """RMS → [0, 1] on a dB scale: -60 dBFS → 0, 0 dBFS → 1."""
    return _clip((20.0 * math.log10(max(rms, 1e-9)) + 60.0) / 60.0)


def _brightness(centroid_hz: float) -> float:
    """Spectral centroid → [0, 1] on a log scale between 200 Hz and 8 kHz."""
    return _clip(math.log(max(centroid_hz, 1.0) / 200.0) / math.log(8000.0 / 200.0))


def classify_audio(f: AudioFeatures) -> str:
    """Name the dominant sound of a shot by fixed rules, first match wins.

    1. no RMS value → ``unknown``; RMS < SILENCE_RMS → ``silence``
    2. RMS ≥ LOUD_RMS and (ZCR ≥ NOISY_ZCR or centroid ≥ BRIGHT_CENTROID_HZ) → ``loud_action``
    3. bursty level (rms_std/rms ≥ BURSTY), ZCR and centroid in the speech ranges → ``speech``
    4. a tempo > 0 or a peaked chroma (max/mean ≥ 1.6) with a steady level → ``music``
    5. otherwise → ``ambience``
    """
    rms = f.rms_energy_mean
    if rms is None:
        return "unknown"
    if rms < SILENCE_RMS:
        return "silence"
    zcr = f.zero_crossing_rate_mean if f.zero_crossing_rate_mean is not None else 0.05
    centroid = f.spectral_centroid_mean if f.spectral_centroid_mean is not None else 1500.0
    if rms >= LOUD_RMS and (zcr >= NOISY_ZCR or centroid >= BRIGHT_CENTROID_HZ):
        return "loud_action"
    burstiness = (f.rms_energy_std or 0.0) / rms
    if (
        burstiness >= BURSTY
        and SPEECH_ZCR[0] <= zcr <= SPEECH_ZCR[1]
        and SPEECH_CENTROID_HZ[0] <= centroid <= SPEECH_CENTROID_HZ[1]
    ):
        return "speech"
    chroma_peak = 0.0
    if f.chroma_mean:
        mean = sum(f.chroma_mean) / len(f.chroma_mean)
        chroma_peak = max(f.chroma_mean) / mean if mean > 1e-9 else 0.0
    if (f.tempo or 0.0) > 0.0 or chroma_peak >= 1.6:
        return "music"
    return "ambience"


def audio_cues(f: AudioFeatures | None) -> AudioCues | None:
    """Derive the class, loudness, brightness, noisiness and a prompt summary; None if no audio."""
    if f is None or f.rms_energy_mean is None:
        return None
    cls = classify_audio(f)
    rms = f.rms_energy_mean
    loud = _loudness(rms)
    bright = _brightness(f.spectral_centroid_mean) if f.spectral_centroid_mean else 0.5
    noisy = _clip((f.zero_crossing_rate_mean or 0.0) / 0.3)
    db = 20.0 * math.log10(max(rms, 1e-9))
    level = (
        "silent"
        if cls == "silence"
        else "quiet"
        if loud < 0.4
        else "moderate"
        if loud < 0.7
        else "loud"
    )
    parts = [f"{cls.replace('_', ' ')}", f"{level} ({db:.0f} dBFS)"]
    if cls != "silence":
        tone = "dark, bassy" if bright < 0.35 else "bright, sharp" if bright > 0.7 else "mid-range"
        parts.append(f"{tone} sound")
        if noisy > 0.5:
            parts.append("noisy/broadband")
        if f.tempo:
            parts.append(f"beat ~{f.tempo:.0f} BPM")
    return AudioCues(
        audio_class=cls,
        loudness=round(loud, 4),
        brightness=round(bright, 4),
        noisiness=round(noisy, 4),
        summary=", ".join(parts),
    )


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
        suspense = _clip(1.0 - abs(a.loudness - 0.35) / 0.65) * (1.0 - 0.3 * a.brightness)
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
        model = _clip(float(model_scores.get(name, 0.5)))
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
        fused[name] = round(_clip(value), 4)
    return fused
