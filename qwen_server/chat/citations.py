"""Shot ids named in text: ``shot 12``, ``shots 3, 4 and 9``, ``shots 3-5``, ``#12``; and the
shots an answer cites (by id, or by a timecode inside a shot's span).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .film_table import FilmShot, film_shots, shot_index_at
from .timecode import TIMECODE_RE, timecode_seconds

_SHOT_REF_RE = re.compile(
    r"\bshots?\s*(?:id\s*)?((?:#?\d+(?![\d:]))(?:\s*(?:,|and|&|or|-|–|to)\s*#?\d+(?![\d:]))*)",
    re.IGNORECASE,
)
_HASH_REF_RE = re.compile(r"(?<![\w&])#(\d+)(?![\d:])")


def id_mentions(text: str) -> list[tuple[int, int]]:
    """(position, shot id) for ids written as ``shot 12``, ``shots 3, 4 and 9``, ``shots 3-5``
    or ``#12``."""
    found: list[tuple[int, int]] = []
    for m in _SHOT_REF_RE.finditer(text):
        for item in re.finditer(r"(\d+)(?:\s*(?:-|–|to)\s*#?(\d+))?", m.group(1)):
            lo = int(item.group(1))
            hi = int(item.group(2)) if item.group(2) else lo
            # "3-5" / "3 to 5" is a range; cap it so "shots 1-100000" cannot explode.
            ids = range(lo, hi + 1) if lo < hi <= lo + 50 else sorted({lo, hi})
            found += [(m.start(), n) for n in ids]
    found += [(m.start(), int(m.group(1))) for m in _HASH_REF_RE.finditer(text)]
    return found


def ids_in(text: str) -> list[int]:
    """Shot ids mentioned in ``text``, in order of first mention."""
    return ordered_unique(id_mentions(text))


def ordered_unique(found: list[tuple[int, int]]) -> list[int]:
    seen: set[int] = set()
    ordered: list[int] = []
    for _, n in sorted(found, key=lambda p: p[0]):
        if n not in seen:
            seen.add(n)
            ordered.append(n)
    return ordered


def cited_shots(answer: str, results: Iterable[Mapping[str, Any]]) -> list[int]:
    """Shot ids the answer cites - by id (``shot 12``, ``#12``) or by a timecode inside a
    shot's span - that exist in the film, in order of first mention."""
    shots = film_shots(results)
    return cited_in(answer, shots)


def cited_in(answer: str, shots: Sequence[FilmShot]) -> list[int]:
    """``cited_shots`` for already normalised shots."""
    known = {s.shot_id for s in shots}
    found = id_mentions(answer)
    timed = [s for s in shots if s.start is not None]
    for m in TIMECODE_RE.finditer(answer):
        t = timecode_seconds(m)
        idx = shot_index_at(timed, t)
        if idx is not None:
            s = timed[idx]
            # Only a time inside the shot's span counts (or its start when the end is unknown).
            if (s.end is not None and s.start <= t < s.end) or abs(s.start - t) < 1e-3:  # type: ignore[operator]
                found.append((m.start(), s.shot_id))
    return [n for n in ordered_unique(found) if n in known]
