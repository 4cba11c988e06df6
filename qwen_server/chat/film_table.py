"""One film as the chat sees it: its shots normalised (FilmShot), their table rows and the
whole-film summary computed from every shot (per attribute the mean, the maximum with its shot
and timecode, and the trend across the film in a few equal parts; plus the audio mix).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..contract.constants import ATTRIBUTES
from .timecode import MAX_TIME_S, timecode

# Short column names for the table header; the legend line spells them out.
SHORT_NAMES: dict[str, str] = {
    "suspense": "sus",
    "darkness": "dark",
    "ambiguity": "amb",
    "emotional_tension": "tens",
    "intensity": "int",
    "motion": "mot",
}
TABLE_CAPTION_CHARS = 160  # captions are ~200 chars at most; trim the rare long one
TREND_PARTS = 5

TABLE_LEGEND = "time = start-end HH:MM:SS.mmm; scores 0-1: " + " ".join(
    f"{SHORT_NAMES[a]}={a}" for a in ATTRIBUTES
)


TABLE_HEADER = (
    "time | shot | " + " ".join(SHORT_NAMES[a] for a in ATTRIBUTES) + " | audio | caption"
)


@dataclass(frozen=True)
class FilmShot:
    """What the chat needs of one shot result."""

    shot_id: int
    start: float | None
    end: float | None
    caption: str
    scores: dict[str, float | None]
    audio_class: str | None

    def row(self) -> str:
        """The table row: ``start-end | shot | six scores | audio | caption``."""
        scores = " ".join("-" if v is None else f"{v:.2f}" for v in self.scores.values())
        caption = " ".join(self.caption.split())  # one line, single spaces
        if len(caption) > TABLE_CAPTION_CHARS:
            caption = caption[: TABLE_CAPTION_CHARS - 1].rstrip() + "…"
        return (
            f"{timecode(self.start)}-{timecode(self.end)} | {self.shot_id} | {scores} | "
            f"{self.audio_class or '-'} | {caption or '-'}"
        )


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return value if math.isfinite(value) else None


def _time(value: Any) -> float | None:
    """A time in seconds within [0, MAX_TIME_S]; None when absent, not a number or out of range
    (so no later sum, difference or timecode of film times can overflow)."""
    t = _num(value)
    return t if t is not None and 0 <= t <= MAX_TIME_S else None


def film_shots(results: Iterable[Mapping[str, Any]]) -> list[FilmShot]:
    """Normalise stored or inline results to FilmShots in time order (start, then shot id;
    shots without a start time last)."""
    shots: list[FilmShot] = []
    for r in results:
        attrs = r.get("attributes") or {}
        if not isinstance(attrs, Mapping):
            attrs = {}
        start = _time(r.get("start_time", r.get("start")))
        end = _time(r.get("end_time", r.get("end")))
        duration = _time(r.get("duration"))
        if end is None and start is not None and duration is not None:
            end = _time(start + duration)
        audio = r.get("audio_class")
        shots.append(
            FilmShot(
                shot_id=int(r["shot_id"]),
                start=start,
                end=end,
                caption=str(r.get("caption") or ""),
                scores={a: _num(attrs.get(a)) for a in ATTRIBUTES},
                audio_class=str(audio) if audio else None,
            )
        )
    shots.sort(key=lambda s: (s.start is None, s.start or 0.0, s.shot_id))
    return shots


def shot_index_at(timed: Sequence[FilmShot], t: float) -> int | None:
    """Index of the shot whose span holds ``t`` (else the last one starting before it)."""
    best: int | None = None
    for i, s in enumerate(timed):
        if s.start is not None and s.start <= t + 1e-6:
            best = i
            if s.end is not None and t < s.end:
                return i
    return best


# --- whole-film summary ----------------------------------------------------------------------


def _parts(shots: Sequence[FilmShot]) -> tuple[list[list[FilmShot]], list[str]]:
    """Split the film into up to TREND_PARTS equal parts: by time when every shot has a start
    time and the film has a length, else by shot order. Returns the parts and their labels."""
    k = min(TREND_PARTS, len(shots))
    starts = [s.start for s in shots]
    if all(t is not None for t in starts):
        t0 = min(starts)  # type: ignore[type-var]
        t1 = max((s.end if s.end is not None else s.start) for s in shots)  # type: ignore[type-var]
        if t1 > t0:
            width = (t1 - t0) / k
            parts: list[list[FilmShot]] = [[] for _ in range(k)]
            for s in shots:
                parts[min(k - 1, int((s.start - t0) / width))].append(s)  # type: ignore[operator]
            labels = [
                f"{timecode(t0 + i * width)}-{timecode(t0 + (i + 1) * width)}" for i in range(k)
            ]
            return parts, labels
    size = len(shots) / k
    parts = [list(shots[round(i * size) : round((i + 1) * size)]) for i in range(k)]
    labels = [f"shots #{p[0].shot_id}-#{p[-1].shot_id}" if p else "-" for p in parts]
    return parts, labels


def _trend_word(means: list[float | None]) -> str:
    known = [m for m in means if m is not None]
    if len(known) < 2:
        return "n/a"
    delta = known[-1] - known[0]
    word = "rising" if delta >= 0.1 else "falling" if delta <= -0.1 else "steady"
    best = max(range(len(means)), key=lambda i: -1.0 if means[i] is None else means[i])
    return f"{word}, highest in part {best + 1}"


def film_summary(shots: Sequence[FilmShot], *, title: str | None = None) -> str:
    """Whole-film summary lines computed from every shot."""
    lines: list[str] = []
    n = len(shots)
    timed = [s for s in shots if s.start is not None]
    head = f"FILM: {title}" if title else "FILM"
    if timed:
        t0 = min(s.start for s in timed)  # type: ignore[type-var]
        t1 = max((s.end if s.end is not None else s.start) for s in timed)  # type: ignore[type-var]
        lines.append(
            f"{head} - {n} shots analysed, {timecode(t0)} to {timecode(t1)}"
            f" ({t1 - t0:.1f} s, mean shot {(t1 - t0) / max(1, len(timed)):.1f} s)"
        )
    else:
        lines.append(f"{head} - {n} shots analysed (no timing information)")
    if not shots:
        return "\n".join(lines)
    parts, labels = _parts(shots)
    lines.append(
        "WHOLE-FILM SUMMARY (every shot). Trend = mean score in each of "
        f"{len(parts)} equal parts: " + ", ".join(f"{i + 1}={lab}" for i, lab in enumerate(labels))
    )
    lines.append("attribute | mean | max (shot, time) | trend by part")
    for attr in ATTRIBUTES:
        vals = [(s.scores[attr], s) for s in shots if s.scores[attr] is not None]
        if not vals:
            lines.append(f"{attr} | - | - | -")
            continue
        mean = sum(v for v, _ in vals) / len(vals)
        top_v, top = max(vals, key=lambda p: (p[0], -p[1].shot_id))
        part_means: list[float | None] = []
        for part in parts:
            pv = [s.scores[attr] for s in part if s.scores[attr] is not None]
            part_means.append(sum(pv) / len(pv) if pv else None)  # type: ignore[arg-type]
        curve = " ".join("-" if m is None else f"{m:.2f}" for m in part_means)
        lines.append(
            f"{attr} | {mean:.2f} | {top_v:.2f} (shot {top.shot_id}, {timecode(top.start)}) | "
            f"{curve} ({_trend_word(part_means)})"
        )
    audio = Counter(s.audio_class or "unknown" for s in shots)
    lines.append(
        "audio: " + ", ".join(f"{cls} {100 * c / n:.0f}%" for cls, c in audio.most_common())
    )
    return "\n".join(lines)
