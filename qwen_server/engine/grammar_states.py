"""Which grammar state each row of a batch is in, from the bytes it has emitted: the mask
cache's key (``grammar_mask_cache``).

Why this is exact: the serving grammar (``grammar.output_ebnf(None, names)``) is one fixed
sequence, ``"caption: "``, the caption (``[!-~] [ -~]*``), then for attribute ``i`` the literal
``L_i`` (``"\\n" name_0 "="`` for the first, ``" " name_i "="`` after) and a score
(``"0" | [1-9] [0-9]? | "100"``). The caption is printable ASCII: one byte per character, no
quotes to close and no escapes, so no partial character or escape state exists anywhere; it
cannot hold a line break, so the first line break the row emits is where the caption ends. So
the matcher's state, and with it the set of tokens it admits next, is a function of:

* before the line break: the bytes emitted so far while they are at most the prefix
  (``"caption: "`` and a token boundary inside it), else "inside the caption body" (at least
  one caption character: ``[ -~]*`` then the first literal; the same state after any number of
  characters, since the repetition is unbounded);
* after it: the attribute index ``i``, how many bytes of ``L_i`` are written and the score's
  digits so far, up to equivalence: two digit strings are the same state when they admit the
  same continuations (``"1"`` and ``"2"`` differ, ``"1"`` may become ``"100"``; ``"35"``,
  ``"78"`` and ``"100"`` are one state). Key order is forced by the grammar, so ``i`` is found
  by walking the literals in order.

The caption bound (``caption_limit``) is applied on top of the grammar's mask and depends only
on the caption bytes written (``CaptionLimit.level``), so it joins the key as a number.

Any byte that does not fit this walk (it cannot happen for a token the matcher accepted, but
the walk checks the literals anyway) marks the row as unknown: its masks are then always filled
fresh by xgrammar, never cached or read from the cache.

``AnswerLayout`` belongs to the engine-wide ``GrammarCache`` and is shared by every replica:
its ``moves`` memo is only ever extended with values that are a pure function of their key, so
concurrent replicas at worst compute an entry twice (dict reads and writes are atomic).
"""

from __future__ import annotations

from collections.abc import Sequence

from .caption_limit import CaptionLimit
from .output_parsing import SCORE_MAX

_DIGITS = range(0x30, 0x3A)

# A row's state key: hashable and small. ``None``: unknown, fill it fresh.
StateKey = tuple[int, ...] | None
# After the caption: (attribute index, bytes of its literal written, score digits so far).
_Tail = tuple[int, int, bytes]
_START: _Tail = (0, 0, b"")


def score_classes(score_max: int = SCORE_MAX) -> dict[bytes, int]:
    """Every prefix of a valid score (``b""`` included) -> an id equal for prefixes with the
    same continuations (so the same matcher state inside the score rule)."""
    scores = [str(v).encode() for v in range(score_max + 1)]
    prefixes = {s[:n] for s in scores for n in range(len(s) + 1)}
    ids: dict[frozenset[bytes], int] = {}
    out = {}
    for prefix in sorted(prefixes):
        rest = frozenset(s[len(prefix) :] for s in scores if s.startswith(prefix))
        out[prefix] = ids.setdefault(rest, len(ids))
    return out


class AnswerLayout:
    """The fixed parts of one attribute list's answer, as bytes (built once per grammar).

    ``moves`` memoizes the walk after the caption: (state, token) -> (next state, key). It is
    bounded by the states (~300 for 38 attributes) times the tokens seen in them; past
    ``MAX_MOVES`` entries it stops growing (the walk is then done each time).
    """

    MAX_MOVES = 1 << 16

    def __init__(self, prefix: str, literals: Sequence[str]) -> None:
        self.prefix_len = len(prefix.encode())
        self.literals = tuple(lit.encode() for lit in literals)
        if any(not lit or lit[0] in _DIGITS for lit in self.literals):
            raise ValueError("every literal must be non-empty and not start with a digit")
        self.score_class = score_classes()
        self.moves: dict[tuple[_Tail, int], tuple[_Tail | None, StateKey]] = {}

    def walk(self, tail: _Tail, data: bytes) -> tuple[_Tail | None, StateKey]:
        """The state after ``data`` (bytes after the caption) from ``tail``, and its key;
        (None, None) if the bytes do not fit the layout."""
        index, written, digits = tail
        literals = self.literals
        at = 0
        while at < len(data):
            literal = literals[index]
            if written < len(literal):
                n = min(len(literal) - written, len(data) - at)
                if data[at : at + n] != literal[written : written + n]:
                    return None, None
                written += n
                at += n
            elif data[at] in _DIGITS:
                digits += data[at : at + 1]
                at += 1
            else:  # the score ended: the next attribute's literal starts here
                index += 1
                if index >= len(literals):
                    return None, None
                written, digits = 0, b""
        if written < len(literals[index]):
            return (index, written, digits), (-2, index, written)
        score = self.score_class.get(digits)
        if score is None:  # digits no score starts with
            return None, None
        return (index, written, digits), (-3, index, score)


class RowStates:
    """The state of every row of one constrained ``generate`` call, advanced token by token.

    ``layouts[row]`` is the row's answer layout; token bytes come from
    ``CaptionLimit.token_bytes``. Plain Python per row: a step costs ~1 µs a row.
    """

    def __init__(self, layouts: list[AnswerLayout], limit: CaptionLimit) -> None:
        self.layouts = layouts
        self.limit = limit
        self.token_bytes = limit.token_bytes
        rows = len(layouts)
        self.pos = [0] * rows  # bytes before the caption's line break
        self.tail: list[_Tail | None] = [None] * rows  # set once the line break is written
        self.tail_key: list[StateKey] = [None] * rows
        self.unknown = [False] * rows

    def advance(self, rows: list[int], tokens: list[int]) -> None:
        """Rows ``rows`` accepted ``tokens`` (same order)."""
        table = self.token_bytes
        for row, token in zip(rows, tokens, strict=True):
            if self.unknown[row]:
                continue
            tail = self.tail[row]
            layout = self.layouts[row]
            if tail is not None:
                move = layout.moves.get((tail, token))
                if move is None:
                    data = table[token] if 0 <= token < len(table) else b"?"
                    move = layout.walk(tail, data)
                    if len(layout.moves) < layout.MAX_MOVES:
                        layout.moves[(tail, token)] = move
            else:
                data = table[token] if 0 <= token < len(table) else b""
                cut = data.find(b"\n")
                if cut < 0:
                    self.pos[row] += len(data)
                    continue
                self.pos[row] += cut
                if self.pos[row] <= layout.prefix_len:
                    move = (None, None)  # a line break before any caption character
                else:
                    move = layout.walk(_START, data[cut:])
            self.tail[row], self.tail_key[row] = move
            if move[0] is None:
                self.unknown[row] = True

    def level(self, row: int) -> int:
        """The caption bound's restriction level of ``row`` (-1: none)."""
        # A row turns unknown only with a line break: past it the bound no longer applies.
        if self.tail[row] is not None or self.unknown[row]:
            return -1
        return self.limit.level(self.pos[row])

    def key(self, row: int) -> StateKey:
        """``row``'s state (with its caption-bound level), or None if unknown."""
        if self.unknown[row]:
            return None
        if self.tail[row] is not None:
            return self.tail_key[row]
        pos = self.pos[row]
        state = pos if pos <= self.layouts[row].prefix_len else -1  # -1: caption body
        return (state, self.limit.level(pos))
