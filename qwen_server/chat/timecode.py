"""Timecodes: ``HH:MM:SS.mmm`` for the film table, and timecodes read back from text.

A question or an answer may name a moment as ``01:23``, ``1:02:03`` or ``00:01:02.500``;
``TIMECODE_RE`` finds them and ``timecode_seconds`` turns a match into seconds.
"""

from __future__ import annotations

import math
import re

# Times beyond this are nonsense for a film (the contract bounds them far lower, at 7 days) and
# are treated as unknown: a stored legacy row with ``start_time: 1e306`` must not overflow the
# timecode arithmetic (``round(1e306 * 1000)``) or the trend buckets and turn /chat into a 500.
MAX_TIME_S = 10_000_000.0  # ~115 days

TIMECODE_RE = re.compile(r"(?<![\d:.])(?:(\d{1,2}):)?(\d{1,2}):(\d{2})(?:\.(\d{1,3}))?(?![\d:])")


def timecode(seconds: float | None) -> str:
    """``HH:MM:SS.mmm`` for a time in seconds; ``--:--:--.---`` when unknown, negative, not
    finite or beyond MAX_TIME_S. Never raises, whatever float it is given."""
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIME_S:
        return "--:--:--.---"
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def timecode_seconds(m: re.Match[str]) -> float:
    hours = int(m.group(1) or 0)
    frac = m.group(4)
    return (
        hours * 3600
        + int(m.group(2)) * 60
        + int(m.group(3))
        + (int(frac.ljust(3, "0")) / 1000 if frac else 0.0)
    )
