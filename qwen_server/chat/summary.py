"""The whole-film summary: computed from every shot, for every attribute the film has.

Per attribute (the union over the shots, in first-seen order, so a film mixing vocabularies
lists each attribute once, computed over the shots scored on it and saying how many those are
when not all): the mean, the maximum with its shot and timecode, and the trend across the film
in a few equal parts; then the audio mix.

Budget: one compact line per attribute keeps 38 attributes near 1,000 tokens, well within the
chat budget. When the summary would still pass ``max_chars`` (a tight ``chat.max_context_tokens``,
or a film whose shots bring very many different attributes), it is shortened in two steps,
never touching the attributes the question asks about: first the trend column is dropped for
the others, then the last of the others are dropped, with a line naming how many (and as many
of their names as fit). The table and the model's instructions say the summary is the place to
look for attributes that are not in the table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from .film_table import FilmShot, film_attributes
from .timecode import timecode

TREND_PARTS = 5
_DROPPED_NAMES_CHARS = 240  # names listed in the "not summarised" line, at most


def _span(timed: Sequence[FilmShot]) -> tuple[float, float]:
    """First start and last end (or start, where the end is unknown) of shots with a start."""
    starts = [s.start for s in timed if s.start is not None]
    ends = [s.end if s.end is not None else s.start for s in timed]
    return min(starts), max(e for e in ends if e is not None)


def _parts(shots: Sequence[FilmShot]) -> tuple[list[list[FilmShot]], list[str]]:
    """Split the film into up to TREND_PARTS equal parts: by time when every shot has a start
    time and the film has a length, else by shot order. Returns the parts and their labels."""
    k = min(TREND_PARTS, len(shots))
    starts = [s.start for s in shots if s.start is not None]
    if len(starts) == len(shots):
        t0, t1 = _span(shots)
        if t1 > t0:
            width = (t1 - t0) / k
            parts: list[list[FilmShot]] = [[] for _ in range(k)]
            for s, start in zip(shots, starts, strict=True):
                parts[min(k - 1, int((start - t0) / width))].append(s)
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
    ranked = [-1.0 if m is None else m for m in means]
    best = max(range(len(ranked)), key=ranked.__getitem__)
    return f"{word}, highest in part {best + 1}"


def _attribute_lines(
    attr: str, shots: Sequence[FilmShot], parts: Sequence[Sequence[FilmShot]]
) -> tuple[str, str]:
    """The attribute's summary line without and with its trend column."""
    vals = [(s.scores[attr], s) for s in shots if attr in s.scores]
    if not vals:
        return f"{attr} | - | -", f"{attr} | - | - | -"
    mean = sum(v for v, _ in vals) / len(vals)
    top_v, top = max(vals, key=lambda p: (p[0], -p[1].shot_id))
    part_means: list[float | None] = []
    for part in parts:
        pv = [s.scores[attr] for s in part if attr in s.scores]
        part_means.append(sum(pv) / len(pv) if pv else None)
    curve = " ".join("-" if m is None else f"{m:.2f}" for m in part_means)
    # A film mixing vocabularies: say over how many shots the attribute was computed.
    label = attr if len(vals) == len(shots) else f"{attr} ({len(vals)} of {len(shots)} shots)"
    short = f"{label} | {mean:.2f} | {top_v:.2f} (shot {top.shot_id}, {timecode(top.start)})"
    return short, f"{short} | {curve} ({_trend_word(part_means)})"


def _length(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def film_summary(
    shots: Sequence[FilmShot],
    *,
    title: str | None = None,
    attributes: Sequence[str] | None = None,
    asked: Collection[str] = (),
    max_chars: int | None = None,
) -> str:
    """Whole-film summary lines computed from every shot.

    ``attributes``: the film's (default ``film_attributes(shots)``); ``asked``: those the
    question names, always summarised in full; ``max_chars``: the size to shorten to (see the
    module docstring), None for no limit.
    """
    lines: list[str] = []
    n = len(shots)
    timed = [s for s in shots if s.start is not None]
    head = f"FILM: {title}" if title else "FILM"
    if timed:
        t0, t1 = _span(timed)
        lines.append(
            f"{head} - {n} shots analysed, {timecode(t0)} to {timecode(t1)}"
            f" ({t1 - t0:.1f} s, mean shot {(t1 - t0) / max(1, len(timed)):.1f} s)"
        )
    else:
        lines.append(f"{head} - {n} shots analysed (no timing information)")
    if not shots:
        return "\n".join(lines)
    attrs = list(film_attributes(shots) if attributes is None else attributes)
    parts, labels = _parts(shots)
    audio = Counter(s.audio_class or "unknown" for s in shots)
    audio_line = "audio: " + ", ".join(
        f"{cls} {100 * c / n:.0f}%" for cls, c in audio.most_common()
    )
    intro_head = f"WHOLE-FILM SUMMARY (every shot, all {len(attrs)} attributes)."
    intro = f"{intro_head} Trend = mean score in each of {len(parts)} equal parts: " + ", ".join(
        f"{i + 1}={lab}" for i, lab in enumerate(labels)
    )
    if not attrs:
        none = "WHOLE-FILM SUMMARY (every shot): no attribute scores"
        return "\n".join([*lines, none, audio_line])
    both = {a: _attribute_lines(a, shots, parts) for a in attrs}

    full = [*lines, intro, "attribute | mean | max (shot, time) | trend by part"]
    full += [both[a][1] for a in attrs] + [audio_line]
    if max_chars is None or _length(full) <= max_chars:
        return "\n".join(full)

    # Step 1: the trend only for the attributes asked about.
    kept_trend = [a for a in attrs if a in asked]
    header = "attribute | mean | max (shot, time)" + (
        f" | trend by part (for {', '.join(kept_trend)} only)" if kept_trend else ""
    )
    top = [*lines, intro if kept_trend else intro_head, header]
    body = [both[a][1] if a in asked else both[a][0] for a in attrs]
    shortened = [*top, *body, audio_line]
    if _length(shortened) <= max_chars:
        return "\n".join(shortened)

    # Step 2: drop the last attributes not asked about, saying which (the note's list of names
    # gets at most a quarter of what is left, so lines win over names in a tight budget).
    room = max_chars - _length([*top, audio_line]) - 80  # 80: the note without its names
    room -= sum(len(both[a][1]) + 1 for a in kept_trend)
    names_chars = min(_DROPPED_NAMES_CHARS, max(0, room) // 4)
    room -= names_chars
    kept: list[str] = []
    dropped: list[str] = []
    for a in attrs:
        if a in asked:
            kept.append(both[a][1])
        elif not dropped and room - (len(both[a][0]) + 1) >= 0:
            room -= len(both[a][0]) + 1
            kept.append(both[a][0])
        else:
            dropped.append(a)
    names = ""
    for i, a in enumerate(dropped):
        if len(names) + len(a) + 2 > names_chars + max(0, room):
            names += f"{', ' if names else ''}and {len(dropped) - i} more" if names else ""
            break
        names += (", " if names else "") + a
    note = f"({len(dropped)} more attributes not summarised, to fit the budget"
    note += f": {names})" if names else ")"
    return "\n".join([*top, *kept, note, audio_line])
