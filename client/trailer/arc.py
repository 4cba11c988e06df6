"""The trailer's arc: the picks ordered into a calm opening, a rising build and a peak at the end.

The picks are sorted by weighted score (ties: the earlier shot first) and cut into three acts:
the top ``ceil(n / 3)`` are the **peak**, the lowest ``(n - peak) // 2`` the **opening** and the
rest the **build** (one pick: all peak; two: build then peak). In the cut the opening comes
first in film order (it sets the scene as the film does), then the build in rising score, then
the peak in rising score, so the cut ends on its highest-scoring pick.

The *target curve* is the shape the cut aims at, as a level from 0 (calm) to 1 (the peak) over
cut time: 0.2 at the start, 0.35 where the opening ends, 0.75 where the build ends and 1.0 at
the last frame, straight lines between. Each pick's *level* is its score scaled to the picks'
range (lowest 0, highest 1; 0.5 for all when they score alike), so cut.json and the report can
draw both on one axis and show how close the cut follows the curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from client.trailer.selection import Clip

OPENING, BUILD, PEAK = "opening", "build", "peak"
ACTS = (OPENING, BUILD, PEAK)
CURVE_LEVELS = (0.2, 0.35, 0.75, 1.0)  # at the start, end of opening, end of build, the end


@dataclass(frozen=True)
class Placed:
    """A clip at its place in the cut: act, position (1-based) and first frame in the cut."""

    clip: Clip
    act: str
    position: int
    record_in: int

    @property
    def record_out(self) -> int:
        """The frame after the clip's last, in cut frames (exclusive end)."""
        return self.record_in + self.clip.frames


def act_sizes(n: int) -> tuple[int, int, int]:
    """(opening, build, peak) pick counts for ``n`` picks."""
    peak = math.ceil(n / 3)
    opening = (n - peak) // 2
    return opening, n - peak - opening, peak


def arrange(clips: Sequence[Clip]) -> tuple[Placed, ...]:
    """The clips in cut order with their act (see the module doc)."""

    def by_score(c: Clip) -> tuple[float, int, int]:
        return (c.candidate.score, c.candidate.shot.start_frame, c.candidate.shot.shot_id)

    ranked = sorted(clips, key=by_score)
    n_open, n_build, _ = act_sizes(len(ranked))
    opening = sorted(ranked[:n_open], key=lambda c: (c.candidate.shot.start_frame, by_score(c)))
    build = ranked[n_open : n_open + n_build]
    peak = ranked[n_open + n_build :]
    placed: list[Placed] = []
    at = 0
    for act, group in ((OPENING, opening), (BUILD, build), (PEAK, peak)):
        for clip in group:
            placed.append(Placed(clip, act, len(placed) + 1, at))
            at += clip.frames
    return tuple(placed)


def curve_points(placed: Sequence[Placed]) -> list[tuple[int, float]]:
    """The target curve as (cut frame, level) corners: start, act ends, last frame."""
    total = placed[-1].record_out if placed else 0
    ends: list[int] = []
    for act in (OPENING, BUILD):
        inside = [p.record_out for p in placed if p.act == act]
        ends.append(max(inside) if inside else (ends[-1] if ends else 0))
    frames = (0, ends[0], ends[1], total)
    return list(zip(frames, CURVE_LEVELS, strict=True))


def target_level(points: Sequence[tuple[int, float]], frame: float) -> float:
    """The curve's level at cut ``frame`` (linear between corners; a zero-length segment is a
    step, the later corner winning)."""
    level = points[0][1]
    for (f0, l0), (f1, l1) in zip(points, points[1:], strict=False):
        if frame >= f1:
            level = l1
        elif frame >= f0:
            return l0 + (l1 - l0) * (frame - f0) / (f1 - f0)
    return level


def score_levels(placed: Sequence[Placed]) -> list[float]:
    """Each placed pick's score scaled to the picks' range (module doc)."""
    scores = [p.clip.candidate.score for p in placed]
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi - lo <= 1e-12:
        return [0.5] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]
