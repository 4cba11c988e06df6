"""SMPTE timecodes (``HH:MM:SS:FF``) of frame numbers at a film's frame rate.

Editors' tools (EDL, FCP XML, OTIO) count in frames, so the results carry SMPTE timecodes next
to the millisecond ones. The frame base is the nominal rate: the rate rounded to whole frames
(23.976 is counted in 24-frame seconds, 29.97 in 30, 59.94 in 60). 29.97 and 59.94 fps (exactly
30000/1001 and 60000/1001) use drop-frame timecode, written with ``;`` before the frames
(``HH:MM:SS;FF``): frame numbers 00 and 01 (00-03 at 59.94) are skipped at the start of every
minute except each tenth, so the timecode stays with the wall clock. Every other rate
(23.976 included, as editors do) is non-drop. Hours are not wrapped at 24.
"""

from __future__ import annotations

from fractions import Fraction

DROP_FRAME_RATES = (Fraction(30000, 1001), Fraction(60000, 1001))


def is_drop_frame(fps: Fraction) -> bool:
    """Whether timecodes at ``fps`` are drop-frame (29.97 and 59.94 fps only)."""
    return Fraction(fps) in DROP_FRAME_RATES


def nominal_rate(fps: Fraction) -> int:
    """The whole frames per timecode second (the rate rounded; at least 1)."""
    return max(1, round(Fraction(fps)))


def smpte(frame: int, fps: Fraction) -> str:
    """The SMPTE timecode of frame number ``frame`` (0 = 00:00:00:00) at ``fps``."""
    if frame < 0:
        raise ValueError("frame numbers start at 0")
    base = nominal_rate(fps)
    separator = ":"
    if is_drop_frame(fps):
        separator = ";"
        drop = 2 * base // 30  # 2 frame numbers per minute at 29.97, 4 at 59.94
        per_minute = base * 60 - drop
        per_ten_minutes = per_minute * 10 + drop
        tens, rest = divmod(frame, per_ten_minutes)
        frame += drop * 9 * tens
        if rest > drop:
            frame += drop * ((rest - drop) // per_minute)
    seconds, ff = divmod(frame, base)
    minutes, ss = divmod(seconds, 60)
    hh, mm = divmod(minutes, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}{separator}{ff:02d}"
