"""Transitions between the shots of a generated film (``make_film(joins=...)``): dissolves,
fades to and from black and black segments, with their ground truth (``TransitionTruth``).

Kept apart from ``tests.film_factory`` (which imports it) so each stays a readable size.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

JOIN_KINDS: tuple[str, ...] = ("cut", "dissolve", "fade")


@dataclass(frozen=True)
class Join:
    """How a shot of a generated film follows the one before it (``make_film(joins=...)``).

    ``"cut"``: a hard cut (the default between shots). ``"dissolve"``: ``frames`` frames that
    cross-fade linearly from the outgoing shot (still drifting) to the incoming one (already
    moving). ``"fade"``: ``frames`` frames fading the outgoing shot to black, ``black`` black
    frames, then ``fade_in`` frames (default ``frames``) fading the incoming shot in; a length of
    0 is a hard cut to or from the black. The transition frames come on top of the shots' own.
    """

    kind: str = "cut"
    frames: int = 0
    black: int = 0
    fade_in: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOIN_KINDS:
            raise ValueError(f"kind must be one of {JOIN_KINDS}, not {self.kind!r}")
        if self.frames < 0 or self.black < 0 or (self.fade_in or 0) < 0:
            raise ValueError("transition lengths must be >= 0")
        if self.kind == "dissolve" and self.frames < 1:
            raise ValueError("a dissolve needs at least one frame")


@dataclass(frozen=True)
class TransitionTruth:
    """One transition of a generated film: ``kind`` (cut, dissolve, fade_out, black, fade_in)
    and its frames ``first..last`` inclusive (a cut: both the first frame of the new shot)."""

    kind: str
    first: int
    last: int


def is_cut(joins: list[Join | None], index: int) -> bool:
    """Whether shot ``index + 1`` follows shot ``index`` by a hard cut (no transition frames)."""
    join = joins[index] if index < len(joins) else None
    return join is None or join.kind == "cut"


def write_join(
    join: Join,
    index: int,
    own_frames: int,
    first: int,
    picture: Any,
    scaled: Any,
    emit: Any,
    step: Fraction,
    shape: tuple[int, int],
) -> list[TransitionTruth]:
    """Write the transition frames between shots ``index`` and ``index + 1`` (starting at
    frame number ``first``); returns their truth."""
    if join.kind == "cut":
        return []
    if join.kind == "dissolve":
        n = join.frames
        for k in range(1, n + 1):
            alpha = k / (n + 1)
            a = picture(index, own_frames + k - 1).astype(np.float32)
            b = picture(index + 1, k - 1 - n).astype(np.float32)
            emit(((1 - alpha) * a + alpha * b + 0.5).astype(np.uint8), step)
        return [TransitionTruth("dissolve", first, first + n - 1)]
    out: list[TransitionTruth] = []
    frame = first
    for k in range(1, join.frames + 1):
        emit(scaled(picture(index, own_frames + k - 1), 1 - k / (join.frames + 1)), step)
    if join.frames:
        out.append(TransitionTruth("fade_out", frame, frame + join.frames - 1))
        frame += join.frames
    black = np.zeros((*shape, 3), np.uint8)
    for _ in range(join.black):
        emit(black, step)
    if join.black:
        out.append(TransitionTruth("black", frame, frame + join.black - 1))
        frame += join.black
    fade_in = join.frames if join.fade_in is None else join.fade_in
    for k in range(1, fade_in + 1):
        emit(scaled(picture(index + 1, k - 1 - fade_in), k / (fade_in + 1)), step)
    if fade_in:
        out.append(TransitionTruth("fade_in", frame, frame + fade_in - 1))
    return out


def score_transitions(
    truth: list[TransitionTruth], found: list[TransitionTruth]
) -> dict[str, float]:
    """Precision, recall, F1 and kind accuracy of detected against true transitions.

    A match pairs one true and one detected interval (inclusive frames) overlapping by at
    least half their union (IoU >= 0.5), greedily by IoU, one to one, whatever their kinds;
    kind accuracy is the share of matches whose kinds agree."""

    def iou(a: TransitionTruth, b: TransitionTruth) -> float:
        inter = min(a.last, b.last) - max(a.first, b.first) + 1
        union = max(a.last, b.last) - min(a.first, b.first) + 1
        return max(0, inter) / union

    pairs = sorted(
        ((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
        reverse=True,
    )
    used_t: set[int] = set()
    used_f: set[int] = set()
    matches = []
    for v, i, j in pairs:
        if v < 0.5 or i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        matches.append((truth[i], found[j]))
    p = len(matches) / len(found) if found else 0.0
    r = len(matches) / len(truth) if truth else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    kind = sum(t.kind == f.kind for t, f in matches) / len(matches) if matches else 0.0
    return {"precision": p, "recall": r, "f1": f1, "kind_accuracy": kind, "matches": len(matches)}
