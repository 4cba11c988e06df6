"""Audio cues: per-shot audio features -> an audio class and loudness / brightness / noisiness.

Rules, not a model. The librosa features of every client (RMS energy, zero-crossing rate,
spectral centroid, the burstiness of RMS, chroma, tempo) decide silence / speech / music /
loud_action / ambience; since issue 15 a client may also send measured speech and music shares
(silero-vad), beat times and BS.1770 loudness, and where it does those decide instead of the
proxies they replace (``classify_audio``). A shot without any of the new fields gets exactly the
pre-issue-15 cues (``tests/unit/test_audio_v1_compat.py``). The cues feed fusion (``fusion``),
the shot's ``audio_class`` and the one-line audio summary of the model's prompt.
"""

from __future__ import annotations

import math

from ..contract.analysis import AudioCues, AudioFeatures

SILENCE_RMS = 0.004  # ≈ -48 dBFS: below this nothing audible is happening
LOUD_RMS = 0.12  # ≈ -18 dBFS: a loud mix
# The same two levels in LUFS: for a mid-frequency sound BS.1770 loudness is close to its RMS
# level in dBFS (a 1 kHz sine at -20 dBFS RMS measures -20 LUFS on one channel); K-weighting
# discounts rumble below ~100 Hz, gating ignores the pauses, which is why LUFS is the better
# measure of what a listener hears.
SILENCE_LUFS = -48.0
LOUD_LUFS = -18.0
NOISY_ZCR = 0.15  # broadband noise / hiss / crashes
BRIGHT_CENTROID_HZ = 3500.0
SPEECH_CENTROID_HZ = (300.0, 3500.0)
SPEECH_ZCR = (0.02, 0.2)
BURSTY = 0.45  # rms_std / rms_mean: speech pauses between syllables and words
SPEECH_RATIO = 0.3  # speech_ratio at or above: the shot is dialogue (a line or two in a shot)
MUSIC_RATIO = 0.5  # music_ratio at or above: music is what the shot mostly sounds like
# Below these the summary does not mention minor speech or music of a shot of another class.
MENTION_SPEECH = 0.1
MENTION_MUSIC = 0.2


def clip(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _loudness(db: float) -> float:
    """A level in dB (dBFS or LUFS) → [0, 1]: -60 → 0, 0 → 1."""
    return clip((db + 60.0) / 60.0)


def _rms_db(rms: float) -> float:
    return 20.0 * math.log10(max(rms, 1e-9))


def _brightness(centroid_hz: float) -> float:
    """Spectral centroid → [0, 1] on a log scale between 200 Hz and 8 kHz."""
    return clip(math.log(max(centroid_hz, 1.0) / 200.0) / math.log(8000.0 / 200.0))


def _silent(f: AudioFeatures, rms: float) -> bool:
    # loudness_lufs is null both for gated silence and for windows under one 0.4 s block, so a
    # null cannot mean silence by itself; RMS decides then (gated silence, every block below
    # -70 LUFS, is far below SILENCE_RMS anyway).
    if f.loudness_lufs is not None:
        return f.loudness_lufs < SILENCE_LUFS
    return rms < SILENCE_RMS


def _loud(f: AudioFeatures, rms: float) -> bool:
    if f.loudness_lufs is not None:
        return f.loudness_lufs >= LOUD_LUFS
    return rms >= LOUD_RMS


def classify_audio(f: AudioFeatures) -> str:
    """Name the dominant sound of a shot by fixed rules, first match wins.

    "Level" is ``loudness_lufs`` when sent, else the RMS level (``rms_energy_mean``).

    1. no RMS value → ``unknown``; level below SILENCE_LUFS / SILENCE_RMS → ``silence``
    2. level ≥ LOUD_LUFS / LOUD_RMS and (ZCR ≥ NOISY_ZCR or centroid ≥ BRIGHT_CENTROID_HZ)
       → ``loud_action`` (loud dialogue over a crash is still the crash)
    3. ``speech``: with ``speech_ratio``, when it is ≥ SPEECH_RATIO (and never otherwise, whatever
       the level's burstiness); without it, a bursty level (rms_std/rms ≥ BURSTY) with ZCR and
       centroid in the speech ranges
    4. ``music``: with ``music_ratio``, when it is ≥ MUSIC_RATIO (and never otherwise); without
       it, a tempo > 0 or a peaked chroma (max/mean ≥ 1.6)
    5. otherwise → ``ambience``
    """
    rms = f.rms_energy_mean
    if rms is None:
        return "unknown"
    if _silent(f, rms):
        return "silence"
    zcr = f.zero_crossing_rate_mean if f.zero_crossing_rate_mean is not None else 0.05
    centroid = f.spectral_centroid_mean if f.spectral_centroid_mean is not None else 1500.0
    if _loud(f, rms) and (zcr >= NOISY_ZCR or centroid >= BRIGHT_CENTROID_HZ):
        return "loud_action"
    if f.speech_ratio is not None:
        if f.speech_ratio >= SPEECH_RATIO:
            return "speech"
    elif (
        (f.rms_energy_std or 0.0) / rms >= BURSTY
        and SPEECH_ZCR[0] <= zcr <= SPEECH_ZCR[1]
        and SPEECH_CENTROID_HZ[0] <= centroid <= SPEECH_CENTROID_HZ[1]
    ):
        return "speech"
    if f.music_ratio is not None:
        return "music" if f.music_ratio >= MUSIC_RATIO else "ambience"
    chroma_peak = 0.0
    if f.chroma_mean:
        mean = sum(f.chroma_mean) / len(f.chroma_mean)
        chroma_peak = max(f.chroma_mean) / mean if mean > 1e-9 else 0.0
    if (f.tempo or 0.0) > 0.0 or chroma_peak >= 1.6:
        return "music"
    return "ambience"


def beat_density(f: AudioFeatures, duration: float | None) -> float | None:
    """Beats per second of the shot: beats at or before ``duration`` / ``duration``.

    None without ``beat_times`` or without a positive duration (a rate needs both)."""
    if f.beat_times is None or duration is None or duration <= 0:
        return None
    return sum(1 for t in f.beat_times if t <= duration) / duration


def _percent(ratio: float) -> str:
    return f"{100.0 * ratio:.0f} %"


def _summary(f: AudioFeatures, cls: str, loud: float, bright: float, noisy: float) -> str:
    """The prompt's one line; exactly the pre-issue-15 line when no new field is sent."""
    level = (
        "silent"
        if cls == "silence"
        else "quiet"
        if loud < 0.4
        else "moderate"
        if loud < 0.7
        else "loud"
    )
    if cls == "speech" and f.speech_ratio is not None:
        head = f"dialogue (speech {_percent(f.speech_ratio)} of the shot)"
    elif cls == "music" and f.music_ratio is not None:
        head = f"music ({_percent(f.music_ratio)} of the shot)"
    else:
        head = cls.replace("_", " ")
    if f.loudness_lufs is not None:
        parts = [head, f"{level} ({f.loudness_lufs:.0f} LUFS)"]
    else:
        parts = [head, f"{level} ({_rms_db(f.rms_energy_mean or 0.0):.0f} dBFS)"]
    if cls != "silence":
        tone = "dark, bassy" if bright < 0.35 else "bright, sharp" if bright > 0.7 else "mid-range"
        parts.append(f"{tone} sound")
        if noisy > 0.5:
            parts.append("noisy/broadband")
        if cls != "speech" and (f.speech_ratio or 0.0) >= MENTION_SPEECH:
            parts.append(f"some dialogue (speech {_percent(f.speech_ratio or 0.0)} of the shot)")
        if cls != "music" and (f.music_ratio or 0.0) >= MENTION_MUSIC:
            parts.append(f"music {_percent(f.music_ratio or 0.0)} of the shot")
        # A beat tracker finds "beats" in any sound (speech, traffic): where the music share is
        # measured, the beat is only mentioned for a shot with some music.
        if f.tempo and (f.music_ratio is None or f.music_ratio >= MENTION_MUSIC):
            parts.append(f"beat ~{f.tempo:.0f} BPM")
        if f.loudness_range_lu is not None:
            parts.append(f"loudness range {f.loudness_range_lu:.0f} LU")
    return ", ".join(parts)


def audio_cues(f: AudioFeatures | None, duration: float | None = None) -> AudioCues | None:
    """Derive the class, loudness, brightness, noisiness and a prompt summary; None if no audio.

    ``duration`` (the shot's, seconds) turns ``beat_times`` into a beat density."""
    if f is None or f.rms_energy_mean is None:
        return None
    cls = classify_audio(f)
    db = f.loudness_lufs if f.loudness_lufs is not None else _rms_db(f.rms_energy_mean)
    loud = _loudness(db)
    bright = _brightness(f.spectral_centroid_mean) if f.spectral_centroid_mean else 0.5
    noisy = clip((f.zero_crossing_rate_mean or 0.0) / 0.3)
    density = beat_density(f, duration)
    return AudioCues(
        audio_class=cls,
        loudness=round(loud, 4),
        brightness=round(bright, 4),
        noisiness=round(noisy, 4),
        summary=_summary(f, cls, loud, bright, noisy),
        speech_ratio=f.speech_ratio,
        music_ratio=f.music_ratio,
        loudness_lufs=f.loudness_lufs,
        loudness_range_lu=f.loudness_range_lu,
        beat_density=None if density is None else round(density, 4),
    )
