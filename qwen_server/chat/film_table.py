"""One film as the chat sees it: its shots normalised (FilmShot), the attributes it has, and the
shot table's columns, legend, header and rows.

Attributes are the caller's (issue 10): a shot carries whatever scores its analysis produced,
and a stored film may mix vocabularies (some shots scored on the v1 six, later ones on 38). So
``film_attributes`` is the union over the shots in first-seen order, a shot lacking one of them
shows ``-`` in that column, and the table shows only a few columns per question
(``table_columns``): 38 columns on 2,000 rows would spend the whole budget on digits. The
whole-film summary (``summary.py``) still covers every attribute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..contract.constants import ATTRIBUTES
from ..contract.vocabulary import ATTRIBUTE_NAME_RE
from .timecode import MAX_TIME_S, timecode

# The v1 attributes keep their v1 short column names; other names get generated ones.
V1_SHORT_NAMES: dict[str, str] = {
    "suspense": "sus",
    "darkness": "dark",
    "ambiguity": "amb",
    "emotional_tension": "tens",
    "intensity": "int",
    "motion": "mot",
}
MAX_COLUMNS = 8  # score columns in the table, at most
DEFAULT_COLUMNS = 6  # columns when the question names no attribute
TABLE_CAPTION_CHARS = 160  # captions are ~200 chars at most; trim the rare long one
MENTION_SPEECH = 0.1  # the audio column shows a shot's speech share from 10 % on


@dataclass(frozen=True)
class FilmShot:
    """What the chat needs of one shot result; ``scores`` holds the attributes it was scored on
    (numbers only: a missing, null or non-numeric score is simply absent)."""

    shot_id: int
    start: float | None
    end: float | None
    caption: str
    scores: dict[str, float]
    audio_class: str | None
    speech_ratio: float | None = None  # from the result's audio cues (issue 15), when measured

    def row(self, columns: Sequence[str]) -> str:
        """The table row: ``start-end | shot | scores of columns | audio | caption``
        (``-`` for a column the shot has no score for; no score part without columns)."""
        caption = " ".join(self.caption.split())  # one line, single spaces
        if len(caption) > TABLE_CAPTION_CHARS:
            caption = caption[: TABLE_CAPTION_CHARS - 1].rstrip() + "…"
        scores = ""
        if columns:
            values = (self.scores.get(a) for a in columns)
            scores = " ".join("-" if v is None else f"{v:.2f}" for v in values) + " | "
        return (
            f"{timecode(self.start)}-{timecode(self.end)} | {self.shot_id} | {scores}"
            f"{self.audio()} | {caption or '-'}"
        )

    def audio(self) -> str:
        """The audio column: the class, with the measured speech share when there is some
        (``music (speech 15%)``), so the chat can find dialogue; ``-`` when unknown."""
        text = self.audio_class or "-"
        if self.speech_ratio is not None and self.speech_ratio >= MENTION_SPEECH:
            text += f" (speech {100 * self.speech_ratio:.0f}%)"
        return text


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


def _scores(attrs: Any) -> dict[str, float]:
    """The usable scores of a result's ``attributes``: valid names with finite numbers, in the
    result's order. Anything else (legacy junk, nulls) is left out, never sent to the model."""
    if not isinstance(attrs, Mapping):
        return {}
    out: dict[str, float] = {}
    for name, value in attrs.items():
        v = _num(value)
        if v is not None and isinstance(name, str) and ATTRIBUTE_NAME_RE.fullmatch(name):
            out[name] = v
    return out


def film_shots(results: Iterable[Mapping[str, Any]]) -> list[FilmShot]:
    """Normalise stored or inline results to FilmShots in time order (start, then shot id;
    shots without a start time last)."""
    shots: list[FilmShot] = []
    for r in results:
        start = _time(r.get("start_time", r.get("start")))
        end = _time(r.get("end_time", r.get("end")))
        duration = _time(r.get("duration"))
        if end is None and start is not None and duration is not None:
            end = _time(start + duration)
        audio = r.get("audio_class")
        cues = r.get("audio")
        speech = _num(cues.get("speech_ratio")) if isinstance(cues, Mapping) else None
        shots.append(
            FilmShot(
                shot_id=int(r["shot_id"]),
                start=start,
                end=end,
                caption=str(r.get("caption") or ""),
                scores=_scores(r.get("attributes")),
                audio_class=str(audio) if audio else None,
                speech_ratio=speech if speech is not None and 0 <= speech <= 1 else None,
            )
        )
    shots.sort(key=lambda s: (s.start is None, s.start or 0.0, s.shot_id))
    return shots


def film_attributes(shots: Iterable[FilmShot]) -> list[str]:
    """Every attribute any shot has, in first-seen order (shots in film order)."""
    seen: dict[str, None] = {}
    for s in shots:
        for name in s.scores:
            if name not in seen:
                seen[name] = None
    return list(seen)


def shot_index_at(timed: Sequence[FilmShot], t: float) -> int | None:
    """Index of the shot whose span holds ``t`` (else the last one starting before it)."""
    best: int | None = None
    for i, s in enumerate(timed):
        if s.start is not None and s.start <= t + 1e-6:
            best = i
            if s.end is not None and t < s.end:
                return i
    return best


# --- columns ---------------------------------------------------------------------------------


def table_columns(asked: Iterable[str], attributes: Sequence[str]) -> list[str]:
    """The score columns of the table for a question, in the film's attribute order.

    The rule: the attributes the question names (``asked``, at most MAX_COLUMNS), then the
    default set until MAX_COLUMNS: the v1 six that the film has, topped up with the film's
    other attributes in first-seen order to DEFAULT_COLUMNS. So a v1 film always shows its six
    (whatever is asked), a 38-attribute film shows the asked ones with about six for context.
    Columns keep the film's order so a row reads the same from one question to the next.
    """
    present = set(attributes)
    chosen = list(dict.fromkeys(a for a in asked if a in present))[:MAX_COLUMNS]
    defaults = [a for a in ATTRIBUTES if a in present]
    top_up = max(0, DEFAULT_COLUMNS - len(defaults))
    defaults += [a for a in attributes if a not in defaults][:top_up]
    for a in defaults:
        if len(chosen) >= MAX_COLUMNS:
            break
        if a not in chosen:
            chosen.append(a)
    order = {a: i for i, a in enumerate(attributes)}
    return sorted(chosen, key=order.__getitem__)


def _short_candidate(name: str) -> str:
    """``humor`` -> ``humo``, ``romantic_tension`` -> ``romt``: a one-word name's first four
    letters, else the first word's first three letters and the other words' initials."""
    words = [w for w in name.split("_") if w]
    if len(words) == 1:
        return words[0][:4]
    return words[0][:3] + "".join(w[0] for w in words[1:])


def short_names(attributes: Sequence[str]) -> dict[str, str]:
    """Unique short column names for ``attributes`` (all of the film's, so a column keeps its
    name whatever the question): the v1 names for the v1 six, generated ones for the rest,
    lengthened (more of the name, then a number) where two would clash."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for a in attributes:  # the v1 names first: they are what v1 prompts always said
        if a in V1_SHORT_NAMES:
            out[a] = V1_SHORT_NAMES[a]
            taken.add(out[a])
    for a in attributes:
        if a in out:
            continue
        base = _short_candidate(a)
        compact = a.replace("_", "")
        candidates = [base] + [compact[:k] for k in range(len(base) + 1, len(compact) + 1)]
        short = next((c for c in candidates if c not in taken), None)
        n = 2
        while short is None or short in taken:
            short, n = f"{base}{n}", n + 1
        out[a] = short
        taken.add(short)
    return out


def table_legend(columns: Sequence[str], names: Mapping[str, str], total: int) -> str:
    """The line that explains the rows: the time format and each column's full name; says how
    many of the film's attributes are not columns (the summary has them)."""
    legend = "time = start-end HH:MM:SS.mmm; scores 0-1, - = not scored"
    if columns:
        legend += ": " + " ".join(f"{names[a]}={a}" for a in columns)
    else:
        legend += ": (no scores)"
    others = total - len(columns)
    if others > 0:
        legend += f"; {others} more attribute{'s' if others > 1 else ''} not shown as columns"
    return legend


def table_header(columns: Sequence[str], names: Mapping[str, str]) -> str:
    """The table's header line for ``columns``."""
    scores = " ".join(names[a] for a in columns) + " | " if columns else ""
    return f"time | shot | {scores}audio | caption"
