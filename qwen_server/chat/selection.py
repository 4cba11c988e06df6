"""Which shots go into the table when not all of them fit: ``rank_shots`` orders every shot by
importance for the question (see ``chat/context.py``'s docstring for the order).

Peaks are taken over the attributes the film has, whatever its vocabulary; with 38 of them a
peak per attribute would fill a small budget before anything the question asks for, so the
order is: the peaks of the attributes asked about and of the table's columns, the relevance
picks, then the peaks of the film's other attributes (whose maximum the summary names by
shot), then the next peaks of the table's columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .citations import ids_in
from .film_table import FilmShot, film_attributes, shot_index_at, table_columns
from .question import caption_stems, question_terms
from .timecode import TIMECODE_RE, timecode_seconds

__all__ = ["question_terms", "rank_shots"]


def _referenced(question: str, shots: Sequence[FilmShot]) -> list[FilmShot]:
    """Shots the question names by id, or by a timecode (the shot at that time and its
    neighbours)."""
    by_id = {s.shot_id: s for s in shots}
    out: list[FilmShot] = []
    for sid in ids_in(question):
        if sid in by_id:
            out.append(by_id[sid])
    timed = [s for s in shots if s.start is not None]
    for m in TIMECODE_RE.finditer(question):
        t = timecode_seconds(m)
        idx = shot_index_at(timed, t)
        if idx is not None:
            out.extend(timed[max(0, idx - 1) : idx + 2])
    return out


def _coverage_order(n: int) -> list[int]:
    """Indices 0..n-1 ordered so that every prefix is spread evenly over the film
    (0, n/2, n/4, 3n/4, ...)."""
    order: list[int] = []
    seen: set[int] = set()
    step = 1 << max(0, (n - 1).bit_length())
    while step >= 1:
        for i in range(0, n, step):
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
    return order


def rank_shots(
    question: str, shots: Sequence[FilmShot], columns: Sequence[str] | None = None
) -> list[FilmShot]:
    """Every shot once, most important for this question first (the order: chat/context.py
    and this module's docstring). ``columns``: the table's score columns (by default those
    ``table_columns`` picks for the question)."""
    attributes = film_attributes(shots)
    keywords, asked = question_terms(question, attributes)
    if columns is None:
        columns = table_columns(asked, attributes)
    first = list(dict.fromkeys([*asked, *columns]))  # asked first, then the other columns
    rest = [a for a in attributes if a not in first]
    order: list[FilmShot] = []
    seen: set[int] = set()

    def take(items: Iterable[FilmShot]) -> None:
        for s in items:
            if s.shot_id not in seen:
                seen.add(s.shot_id)
                order.append(s)

    def by_attr(attr: str) -> list[FilmShot]:
        scored = [s for s in shots if attr in s.scores]
        return sorted(scored, key=lambda s: (-s.scores[attr], s.shot_id))

    ranked = {a: by_attr(a) for a in attributes}

    def peaks(attrs: Iterable[str]) -> Iterable[FilmShot]:
        # A peak only where the attribute varies at all: the "peak" of a flat curve is an
        # arbitrary shot.
        for a in attrs:
            r = ranked[a]
            if r and r[0].scores[a] != r[-1].scores[a]:
                yield r[0]

    # 1. shots the question names; 2. the peaks of the asked attributes and the columns.
    take(_referenced(question, shots))
    take(peaks(first))

    # 3. relevance: caption keyword hits + strength of the attributes the question names.
    def relevance(s: FilmShot) -> float:
        hits = len(keywords & caption_stems(s.caption)) if keywords else 0
        vals = [
            s.scores[a] if high else 1.0 - s.scores[a] for a, high in asked.items() if a in s.scores
        ]
        strength = 2.0 * sum(vals) / len(vals) if vals else 0.0
        return hits + strength

    scored = [(relevance(s), s) for s in shots]
    take(s for r, s in sorted(scored, key=lambda p: (-p[0], p[1].shot_id)) if r > 0)

    # 4. the peaks of the other attributes; 5. the next peaks of the asked attributes and the
    # columns, interleaved; 6. even coverage of the rest.
    take(peaks(rest))
    for rank in (1, 2):
        take(ranked[a][rank] for a in first if len(ranked[a]) > rank)
    take(shots[i] for i in _coverage_order(len(shots)))
    return order
