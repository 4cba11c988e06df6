"""What a question asks for: caption keywords, and the attributes it names (``question_terms``).

Attributes are the film's own (any vocabulary, issue 10). A question names an attribute when it
says (matching rules, in this order):

1. its name, or its words in sequence: ``romantic_tension``, "romantic tension",
   "romantic-tension" (each word compared by its simple stem, so "romantic tensions" counts);
2. a word with the same simple stem as a one-word name: "humorous" and "humour" for ``humor``,
   "darkest" for ``darkness``, "intense" for ``intensity`` (``_attr_stem``: a few English
   suffixes and the British "-our"; stopwords such as "time" or "scene" never match by stem);
3. a listed word: the v1 word lists (suspense ... motion: "scary", "night", "calmest", ...) and
   short lists for common trailer attributes ("funny"/"funniest" for ``humor``, "love" for
   ``romantic_tension``, ...), applied only to attributes the film has.

A word asks for high values, unless the list says otherwise ("calm" is low intensity) or the
word before it is a negation such as "least", "not" or "less", which flips it. Words that were
part of a multi-word name's match are not matched again on their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..contract.constants import ATTRIBUTES

# Question words that point at a score column: (attribute, True for "high" / False for "low",
# surface forms). Listed as surface forms (no stemmer) so the mapping stays explicit and
# reviewable; only used for attributes the film has.
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
    # Common attributes of trailer vocabularies (examples/trailer_attributes.yaml).
    (
        "humor",
        True,
        "funny funnier funniest comic comical comedy comedic hilarious joke jokes laugh laughs"
        " laughing",
    ),
    ("fear", True, "afraid frightened frightening terrifying terror horror scary scariest"),
    ("romantic_tension", True, "romance romantic love lovers kiss kissing flirt flirting"),
    ("intimacy", True, "intimate tender"),
    ("beauty", True, "beautiful prettiest pretty gorgeous stunning"),
    ("wonder", True, "awe awesome amazing wondrous"),
    ("triumph", True, "triumphant victory victorious win winning celebration"),
    ("mystery", True, "mysterious mysteries secret secrets"),
    ("lightheartedness", True, "cheerful playful lighthearted carefree"),
    ("warmth", True, "warm heartwarming cozy"),
)
_ATTRIBUTE_WORDS: dict[str, list[tuple[str, bool]]] = {}
for _attribute, _high, _words in _ATTRIBUTE_WORD_LISTS:
    for _word in _words.split():
        _ATTRIBUTE_WORDS.setdefault(_word, []).append((_attribute, _high))

_STOPWORD_TEXT = """a an the and or but if of in on at to for from by with without into onto over
    under about
    is are was were be been being am do does did doing have has had having can could would should
    will shall may might must this that these those there here it its it's i me my we our you
    your he she they them his her their what which who whom whose when where why how all any
    each every some most more less much many few other such only own same so than too very just
    also not no nor yes film movie shot shots scene scenes moment moments part parts show shows
    shown find give tell list where's what's which's one ones time times frame frames"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# The word before an attribute word that turns "high" into "low" ("least funny").
_NEGATIONS = frozenset(["least", "lowest", "low", "not", "no", "less", "without", "non"])

_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9'-]*")
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # words for attribute matching: "_" splits
# Longest first: the first that fits is stripped.
_ATTR_SUFFIXES = tuple(
    "edness iness iest ier ness ings ous ity ing est ers er ed es ly s y".split()  # noqa: SIM905
)


def stem(word: str) -> str:
    """The caption keyword stem: a deliberately tiny stemmer, enough for "runs"/"running"/
    "runner" to meet "run"."""
    for suffix in ("ing", "ers", "er", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def attr_stem(word: str) -> str:
    """The stem attribute words are compared by: "-our" spelt "-or" (humour), the longest of a
    few suffixes stripped (funniest, darkness, lightheartedness), then a final "e" (intense)."""
    if word.endswith("our") and len(word) > 4:
        word = word[:-3] + "or"
    for suffix in _ATTR_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def named_attributes(question: str, attributes: Sequence[str]) -> dict[str, bool]:
    """The attributes of ``attributes`` the question names (rules in the module docstring), in
    the order the question names them: attribute -> True for high values, False for low."""
    words = _WORD_RE.findall(question.lower().replace("_", " "))
    stems = [attr_stem(w) for w in words]
    present = set(attributes)
    found: list[tuple[int, str, bool]] = []
    used: set[int] = set()

    def hit(pos: int, attr: str, high: bool) -> None:
        negated = pos > 0 and words[pos - 1] in _NEGATIONS
        found.append((pos, attr, high != negated))

    # 1. names and their words in sequence, longest names first.
    split = {a: [attr_stem(p) for p in a.split("_") if p] for a in attributes}
    for attr in sorted((a for a in attributes if len(split[a]) > 1), key=lambda a: -len(split[a])):
        parts = split[attr]
        k = len(parts)
        for i in range(len(stems) - k + 1):
            if stems[i : i + k] == parts and not used.intersection(range(i, i + k)):
                used.update(range(i, i + k))
                hit(i, attr, True)
    # 2. one-word names by stem; 3. the word lists.
    single = {split[a][0]: a for a in attributes if len(split[a]) == 1}
    for i, word in enumerate(words):
        if i in used:
            continue
        by_stem = single.get(stems[i])
        if by_stem is not None and (word == by_stem.strip("_") or word not in _STOPWORDS):
            hit(i, by_stem, True)
        for listed, high in _ATTRIBUTE_WORDS.get(word, ()):
            if listed in present:
                hit(i, listed, high)
    named: dict[str, bool] = {}
    for _, attr, high in sorted(found, key=lambda f: f[0]):
        named.setdefault(attr, high)
    return named


def question_terms(
    question: str, attributes: Sequence[str] | None = None
) -> tuple[set[str], dict[str, bool]]:
    """Caption keywords (stemmed, stopwords removed) and the attributes the question names
    (``named_attributes``; of ``attributes``, the film's, by default the v1 six)."""
    tokens = _TOKEN_RE.findall(question.lower())
    named = named_attributes(question, ATTRIBUTES if attributes is None else attributes)
    keywords = {stem(t) for t in tokens if len(t) >= 3 and t not in _STOPWORDS and not t.isdigit()}
    return keywords, named


def caption_stems(caption: str) -> set[str]:
    """The caption's keyword stems, compared with the question's keywords."""
    return {stem(t) for t in _TOKEN_RE.findall(caption.lower())}
