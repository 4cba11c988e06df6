"""The film as the chat model sees it: a compact time-coded shot table within a token budget.

A film of 2,000 shots does not fit a chat prompt, so the context has two parts:

* a **whole-film summary** computed from every shot: per attribute the mean, the maximum with
  its shot and timecode, and the trend across the film in a few equal parts; plus the audio mix;
* a **shot table** in time order. When every shot fits the budget they are all there; otherwise
  the rows are chosen by priority: shots the question names (``shot 12``, ``01:23``), the peak
  shot of each attribute, shots relevant to the question (caption keyword overlap plus attribute
  words such as "scary" or "dark" mapped to score columns), further peaks, then evenly spaced
  shots for coverage, until the budget is spent.

Tokens are estimated as characters / 4: close enough for budgeting and needs no tokenizer
download. The budget (``chat.max_context_tokens``) covers everything sent: instructions, film
context, kept history and the question; the answer has its own limit.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..contract.constants import ATTRIBUTES

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
HISTORY_SHARE = 0.25  # at most this share of the budget goes to earlier turns
MESSAGE_OVERHEAD_TOKENS = 4  # role markers etc. per chat message
# Times beyond this are nonsense for a film (the contract bounds them far lower, at 7 days) and
# are treated as unknown: a stored legacy row with ``start_time: 1e306`` must not overflow the
# timecode arithmetic (``round(1e306 * 1000)``) or the trend buckets and turn /chat into a 500.
MAX_TIME_S = 10_000_000.0  # ~115 days

SYSTEM_INSTRUCTIONS = """\
You are a film analyst helping a trailer editor. Answer questions about one film using only the \
shot analysis data below. Each shot row gives its time span (HH:MM:SS.mmm), its shot id, six \
scores from 0 (none) to 1 (extreme) - suspense, darkness, ambiguity, emotional tension, \
intensity, motion - the class of its audio, and a caption of what is on screen.
Rules:
- Cite every moment you mention by shot id and start timecode, like (shot 12, 00:01:02.500).
- Prefer specific shots over generalities; compare scores when it helps.
- If the table lists only some shots, the whole-film summary still covers all of them; say so \
when the shots needed to answer are not listed.
- Never invent shots, timecodes or events that are not in the data; say when the data cannot \
answer the question.
- Be concise. Answer in the language of the question."""

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
_SHOT_REF_RE = re.compile(
    r"\bshots?\s*(?:id\s*)?((?:#?\d+(?![\d:]))(?:\s*(?:,|and|&|or|-|–|to)\s*#?\d+(?![\d:]))*)",
    re.IGNORECASE,
)
_HASH_REF_RE = re.compile(r"(?<![\w&])#(\d+)(?![\d:])")
_TIMECODE_RE = re.compile(r"(?<![\d:.])(?:(\d{1,2}):)?(\d{1,2}):(\d{2})(?:\.(\d{1,3}))?(?![\d:])")


def estimate_tokens(text: str) -> int:
    """Token estimate used for budgeting: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


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


# --- selection -------------------------------------------------------------------------------


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
    for sid in _ids_in(question):
        if sid in by_id:
            out.append(by_id[sid])
    timed = [s for s in shots if s.start is not None]
    for m in _TIMECODE_RE.finditer(question):
        t = _timecode_seconds(m)
        idx = _shot_index_at(timed, t)
        if idx is not None:
            out.extend(timed[max(0, idx - 1) : idx + 2])
    return out


def _timecode_seconds(m: re.Match[str]) -> float:
    hours = int(m.group(1) or 0)
    frac = m.group(4)
    return (
        hours * 3600
        + int(m.group(2)) * 60
        + int(m.group(3))
        + (int(frac.ljust(3, "0")) / 1000 if frac else 0.0)
    )


def _shot_index_at(timed: Sequence[FilmShot], t: float) -> int | None:
    """Index of the shot whose span holds ``t`` (else the last one starting before it)."""
    best: int | None = None
    for i, s in enumerate(timed):
        if s.start is not None and s.start <= t + 1e-6:
            best = i
            if s.end is not None and t < s.end:
                return i
    return best


def _id_mentions(text: str) -> list[tuple[int, int]]:
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


def _ids_in(text: str) -> list[int]:
    """Shot ids mentioned in ``text``, in order of first mention."""
    return _ordered_unique(_id_mentions(text))


def _ordered_unique(found: list[tuple[int, int]]) -> list[int]:
    seen: set[int] = set()
    ordered: list[int] = []
    for _, n in sorted(found, key=lambda p: p[0]):
        if n not in seen:
            seen.add(n)
            ordered.append(n)
    return ordered


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
    """Every shot once, most important for this question first (see the module docstring)."""
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


# --- the whole context -----------------------------------------------------------------------


@dataclass
class FilmContext:
    """The messages to send plus what went into them."""

    messages: list[dict[str, str]]
    shots_in_context: int
    shots_total: int
    shown_ids: list[int] = field(default_factory=list)
    history_kept: int = 0
    estimated_tokens: int = 0


TABLE_LEGEND = "time = start-end HH:MM:SS.mmm; scores 0-1: " + " ".join(
    f"{SHORT_NAMES[a]}={a}" for a in ATTRIBUTES
)
TABLE_HEADER = (
    "time | shot | " + " ".join(SHORT_NAMES[a] for a in ATTRIBUTES) + " | audio | caption"
)


def _keep_history(history: Sequence[Mapping[str, str]], budget: int) -> list[dict[str, str]]:
    """The most recent turns that fit ``budget`` tokens, oldest dropped first."""
    kept: list[dict[str, str]] = []
    used = 0
    for msg in reversed(history):
        cost = estimate_tokens(msg["content"]) + MESSAGE_OVERHEAD_TOKENS
        if used + cost > budget:
            break
        used += cost
        kept.append({"role": msg["role"], "content": msg["content"]})
    kept.reverse()
    return kept


def build_context(
    results: Iterable[Mapping[str, Any]],
    question: str,
    *,
    history: Sequence[Mapping[str, str]] = (),
    max_context_tokens: int,
    title: str | None = None,
) -> FilmContext:
    """Build the chat messages for ``question`` about the film whose shot ``results`` are given.

    The system message holds the instructions, the whole-film summary and as many shot rows as
    the budget allows (all of them for a short film); then the kept history; then the question.
    """
    shots = film_shots(results)
    summary = film_summary(shots, title=title)
    history_kept = _keep_history(history, int(max_context_tokens * HISTORY_SHARE))
    fixed = (
        estimate_tokens(SYSTEM_INSTRUCTIONS)
        + estimate_tokens(summary)
        + estimate_tokens(TABLE_LEGEND + TABLE_HEADER)
        + 40  # the table's title line
        + sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in history_kept)
        + estimate_tokens(question)
        + 2 * MESSAGE_OVERHEAD_TOKENS
    )
    budget_chars = max(0, (max_context_tokens - fixed) * 4)

    rows = {s.shot_id: s.row() for s in shots}
    all_chars = sum(len(r) + 1 for r in rows.values())
    if all_chars <= budget_chars:
        chosen = list(shots)
        how = "all shots"
    else:
        chosen = []
        used = 0
        for s in rank_shots(question, shots):
            cost = len(rows[s.shot_id]) + 1
            if used + cost <= budget_chars:
                chosen.append(s)
                used += cost
            elif budget_chars - used < 60:  # no row is this short: stop looking
                break
        chosen.sort(key=lambda s: (s.start is None, s.start or 0.0, s.shot_id))
        how = (
            f"{len(chosen)} of {len(shots)} shots, chosen for the question, the score peaks "
            "and even coverage; the summary above covers every shot"
        )
    table = "\n".join(
        [f"SHOTS ({how}; time order)", TABLE_LEGEND, TABLE_HEADER]
        + [rows[s.shot_id] for s in chosen]
    )
    system = f"{SYSTEM_INSTRUCTIONS}\n\n{summary}\n\n{table}"
    messages = [{"role": "system", "content": system}, *history_kept]
    messages.append({"role": "user", "content": question})
    return FilmContext(
        messages=messages,
        shots_in_context=len(chosen),
        shots_total=len(shots),
        shown_ids=[s.shot_id for s in chosen],
        history_kept=len(history_kept),
        estimated_tokens=sum(
            estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages
        ),
    )


def cited_shots(answer: str, results: Iterable[Mapping[str, Any]]) -> list[int]:
    """Shot ids the answer cites - by id (``shot 12``, ``#12``) or by a timecode inside a
    shot's span - that exist in the film, in order of first mention."""
    shots = film_shots(results)
    return cited_in(answer, shots)


def cited_in(answer: str, shots: Sequence[FilmShot]) -> list[int]:
    """``cited_shots`` for already normalised shots."""
    known = {s.shot_id for s in shots}
    found = _id_mentions(answer)
    timed = [s for s in shots if s.start is not None]
    for m in _TIMECODE_RE.finditer(answer):
        t = _timecode_seconds(m)
        idx = _shot_index_at(timed, t)
        if idx is not None:
            s = timed[idx]
            # Only a time inside the shot's span counts (or its start when the end is unknown).
            if (s.end is not None and s.start <= t < s.end) or abs(s.start - t) < 1e-3:  # type: ignore[operator]
                found.append((m.start(), s.shot_id))
    return [n for n in _ordered_unique(found) if n in known]
