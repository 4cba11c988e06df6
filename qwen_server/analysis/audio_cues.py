"""Audio cues: per-shot librosa features -> an audio class and loudness / brightness / noisiness.

Rules, not a model: thresholds on RMS energy, zero-crossing rate, spectral centroid and the
burstiness of RMS (speech pauses) decide silence / speech / music / loud_action / ambient; the
cues feed fusion (``fusion``) and the shot's ``audio_class``.
"""

from __future__ import annotations

import math

from ..contract.analysis import AudioCues, AudioFeatures

SILENCE_RMS = 0.004  # ≈ -48 dBFS: below this nothing audible is happening
LOUD_RMS = 0.12  # ≈ -18 dBFS: a loud mix
NOISY_ZCR = 0.15  # broadband noise / hiss / crashes
BRIGHT_CENTROID_HZ = 3500.0
SPEECH_CENTROID_HZ = (300.0, 3500.0)
SPEECH_ZCR = (0.02, 0.2)
BURSTY = 0.45  # rms_std / rms_mean: speech pauses between syllables and words


def clip(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _loudness(rms: float) -> float:
    """RMS → [0, 1] on a dB scale: -60 dBFS → 0, 0 dBFS → 1."""
    return clip((20.0 * math.log10(max(rms, 1e-9)) + 60.0) / 60.0)


def _brightness(centroid_hz: float) -> float:
    """Spectral centroid → [0, 1] on a log scale between 200 Hz and 8 kHz."""
    return clip(math.log(max(centroid_hz, 1.0) / 200.0) / math.log(8000.0 / 200.0))


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
    noisy = clip((f.zero_crossing_rate_mean or 0.0) / 0.3)
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
