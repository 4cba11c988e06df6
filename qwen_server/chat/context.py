"""The film as the chat model sees it: a compact time-coded shot table within a token budget.

A film of 2,000 shots does not fit a chat prompt, so the context has two parts:

* a **whole-film summary** computed from every shot, for every attribute the film has: the
  mean, the maximum with its shot and timecode, and the trend across the film in a few equal
  parts; plus the audio mix. It gets at most SUMMARY_SHARE of the budget (``summary.py`` says
  how it shortens; 38 attributes fit whole in the default budget);
* a **shot table** in time order, with a few score columns chosen for the question: the
  attributes it names plus a default set, at most MAX_COLUMNS (``film_table.table_columns``;
  a v1 film always shows its six). When every shot fits the budget they are all there;
  otherwise the rows are chosen by priority: shots the question names (``shot 12``,
  ``01:23``), the peak shot of each asked attribute and column, shots relevant to the question
  (caption keyword overlap plus the strength of the attributes it names, by name or by words
  such as "scary" or "funniest"), the peaks of the other attributes, further peaks, then evenly
  spaced shots for coverage, until the budget is spent.

Attributes are whatever the film's results carry (issue 10): any names, and a film may mix
vocabularies from shot to shot; a score a shot lacks shows as ``-``.

Here: the budget and the messages (``build_context``). The pieces: ``timecode.py`` (timecodes),
``film_table.py`` (FilmShot, columns, table rows), ``summary.py`` (the whole-film summary),
``question.py`` (what a question names), ``selection.py`` (``rank_shots``), ``citations.py``
(shot ids read back from an answer).

Tokens are estimated as characters / 4: close enough for budgeting and needs no tokenizer
download. The budget (``chat.max_context_tokens``) covers everything sent: instructions, film
context, kept history and the question; the answer has its own limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .film_table import (
    FilmShot,
    film_attributes,
    film_shots,
    short_names,
    table_columns,
    table_header,
    table_legend,
)
from .question import question_terms
from .selection import rank_shots
from .summary import film_summary

HISTORY_SHARE = 0.25  # at most this share of the budget goes to earlier turns
SUMMARY_SHARE = 0.4  # at most this share of the budget goes to the whole-film summary
MESSAGE_OVERHEAD_TOKENS = 4  # role markers etc. per chat message

SYSTEM_INSTRUCTIONS = """\
You are a film analyst helping a trailer editor. Answer questions about one film using only the \
shot analysis data below. Each shot row gives its time span (HH:MM:SS.mmm), its shot id, \
scores from 0 (none) to 1 (extreme) for the attributes its legend names ("-" = not scored), the \
class of its audio, and a caption of what is on screen. The whole-film summary covers every \
attribute of the film, including those that are not table columns.
Rules:
- Cite every moment you mention by shot id and start timecode, like (shot 12, 00:01:02.500).
- Prefer specific shots over generalities; compare scores when it helps.
- If the table lists only some shots, the whole-film summary still covers all of them; say so \
when the shots needed to answer are not listed.
- Never invent shots, timecodes or events that are not in the data; say when the data cannot \
answer the question.
- Be concise. Answer in the language of the question."""


def estimate_tokens(text: str) -> int:
    """Token estimate used for budgeting: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


@dataclass
class FilmContext:
    """The messages to send plus what went into them."""

    messages: list[dict[str, str]]
    shots_in_context: int
    shots_total: int
    shown_ids: list[int] = field(default_factory=list)
    history_kept: int = 0
    estimated_tokens: int = 0


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


def _choose_rows(
    question: str,
    shots: Sequence[FilmShot],
    rows: Mapping[int, str],
    budget_chars: int,
    columns: Sequence[str],
) -> tuple[list[FilmShot], str]:
    """The shots whose rows fit ``budget_chars`` (all of them, or the most important for the
    question in time order) and the table title's description of the choice."""
    all_chars = sum(len(r) + 1 for r in rows.values())
    if all_chars <= budget_chars:
        return list(shots), "all shots"
    chosen: list[FilmShot] = []
    used = 0
    for s in rank_shots(question, shots, columns):
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
    return chosen, how


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
    attributes = film_attributes(shots)
    _, asked = question_terms(question, attributes)
    columns = table_columns(asked, attributes)
    names = short_names(attributes)
    legend = table_legend(columns, names, len(attributes))
    header = table_header(columns, names)
    history_kept = _keep_history(history, int(max_context_tokens * HISTORY_SHARE))
    fixed = (
        estimate_tokens(SYSTEM_INSTRUCTIONS)
        + estimate_tokens(legend + header)
        + 40  # the table's title line
        + sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in history_kept)
        + estimate_tokens(question)
        + 2 * MESSAGE_OVERHEAD_TOKENS
    )
    # The summary's share, or what is left when the rest already takes more (a tiny budget).
    summary_tokens = min(int(max_context_tokens * SUMMARY_SHARE), max_context_tokens - fixed)
    summary = film_summary(
        shots,
        title=title,
        attributes=attributes,
        asked=asked,
        max_chars=max(0, summary_tokens) * 4,
    )
    fixed += estimate_tokens(summary)
    budget_chars = max(0, (max_context_tokens - fixed) * 4)

    rows = {s.shot_id: s.row(columns) for s in shots}
    chosen, how = _choose_rows(question, shots, rows, budget_chars, columns)
    table = "\n".join(
        [f"SHOTS ({how}; time order)", legend, header] + [rows[s.shot_id] for s in chosen]
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
