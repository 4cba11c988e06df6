"""Which shots go into the table when not all of them fit: ``rank_shots`` orders every shot by
importance for the question (see ``chat/context.py``'s docstring for the order).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..contract.constants import ATTRIBUTES
from .citations import ids_in
from .film_table import FilmShot, shot_index_at
from .timecode import TIMECODE_RE, timecode_seconds

# Question words that point at a score column: word -> (attribute, True for "high" / False for
# "low"). Listed as surface forms (no stemmer) so the mapping stays explicit and reviewable.
_ATTRIBUTE_WORD_LISTS: tuple[tuple[str, bool, str], ...] = (
    (
        "suspense",
        True,
        "suspense suspenseful scary scariest scarier scare scared creepy creepiest"
        " eerie ominous dread fear fearful frightening horror menacing spooky thrilling nervous"
        " uneasy unsettling",
    ),
    (
        "darkness",
        True,
        "dark darker darkest darkness night nighttime shadow shadows shadowy gloomy"
        " dim murky black unlit",
    ),
    ("darkness", False, "bright brighter brightest daylight sunny sunlit lit well-lit"),
    (
        "ambiguity",
        True,
        "ambiguous ambiguity unclear mysterious mystery confusing puzzling"
        " enigmatic strange weird odd surreal cryptic",
    ),
    (
        "emotional_tension",
        True,
        "emotional emotion emotions tension tense dramatic drama conflict"
        " sad saddest tearful crying angry anger argument heartbreaking touching romantic intimate",
    ),
    (
        "intensity",
        True,
        "intense intensity action violent violence explosive explosion explosions"
        " fight fights fighting climax climactic loud chaotic powerful epic exciting",
    ),
    ("intensity", False, "quiet quietest calm calmest peaceful gentle serene relaxed"),
    (
        "motion",
        True,
        "fast fastest motion movement moving chase chases running speed quick rapid"
        " frantic kinetic hectic",
    ),
    ("motion", False, "slow slowest still static stationary motionless"),
)
_ATTRIBUTE_WORDS: dict[str, tuple[str, bool]] = {
    word: (attribute, high)
    for attribute, high, words in _ATTRIBUTE_WORD_LISTS
    for word in words.split()
}

_STOPWORD_TEXT = """a an the and or but if of in on at to for from by with without into onto over
    under about
    is are was were be been being am do does did doing have has had having can could would should
    will shall may might must this that these those there here it its it's i me my we our you
    your he she they them his her their what which who whom whose when where why how all any
    each every some most more less much many few other such only own same so than too very just
    also not no nor yes film movie shot shots scene scenes moment moments part parts show shows
    shown find give tell list where's what's which's one ones time times frame frames"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9'-]*")


def _stem(word: str) -> str:
    # A deliberately tiny stemmer: enough for "runs"/"running"/"runner" to meet "run".
    for suffix in ("ing", "ers", "er", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def question_terms(question: str) -> tuple[set[str], dict[str, bool]]:
    """Caption keywords (stemmed, stopwords removed) and attributes named by the question
    (attribute -> True when the question asks for high values, False for low)."""
    tokens = _TOKEN_RE.findall(question.lower())
    attrs: dict[str, bool] = {}
    for t in tokens:
        if t in _ATTRIBUTE_WORDS:
            attr, high = _ATTRIBUTE_WORDS[t]
            attrs.setdefault(attr, high)
    keywords = {_stem(t) for t in tokens if len(t) >= 3 and t not in _STOPWORDS and not t.isdigit()}
    return keywords, attrs


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


def rank_shots(question: str, shots: Sequence[FilmShot]) -> list[FilmShot]:
    """Every shot once, most important for this question first (the order: chat/context.py)."""
    keywords, attrs = question_terms(question)
    order: list[FilmShot] = []
    seen: set[int] = set()

    def take(items: Iterable[FilmShot]) -> None:
        for s in items:
            if s.shot_id not in seen:
                seen.add(s.shot_id)
                order.append(s)

    def by_attr(attr: str, high: bool = True) -> list[FilmShot]:
        scored = [s for s in shots if s.scores[attr] is not None]
        return sorted(
            scored, key=lambda s: (-(s.scores[attr] if high else -s.scores[attr]), s.shot_id)
        )  # type: ignore[operator]

    ranked_by_attr = {a: by_attr(a) for a in ATTRIBUTES}

    # 1. shots the question names; 2. each attribute's peak (when the attribute varies at all:
    # the "peak" of a flat curve is an arbitrary shot).
    take(_referenced(question, shots))
    take(
        r[0]
        for a, r in ranked_by_attr.items()
        if r and r[0].scores[a] != r[-1].scores[a]  # type: ignore[operator]
    )

    # 3. relevance: caption keyword hits + strength of the attributes the question names.
    def relevance(s: FilmShot) -> float:
        hits = len(keywords & {_stem(t) for t in _TOKEN_RE.findall(s.caption.lower())})
        strength = 0.0
        if attrs:
            vals = [
                (s.scores[a] if high else 1.0 - s.scores[a])
                for a, high in attrs.items()
                if s.scores[a] is not None
            ]
            strength = 2.0 * sum(vals) / len(vals) if vals else 0.0  # type: ignore[arg-type]
        return hits + strength

    scored = [(relevance(s), s) for s in shots]
    take(s for r, s in sorted(scored, key=lambda p: (-p[0], p[1].shot_id)) if r > 0)

    # 4. the next peaks of every attribute, interleaved; 5. even coverage of the rest.
    for rank in (1, 2):
        take(r[rank] for r in ranked_by_attr.values() if len(r) > rank)
    take(shots[i] for i in _coverage_order(len(shots)))
    return order
