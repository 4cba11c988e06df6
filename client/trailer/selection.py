"""The trailer cut's selection: score, pick, trim and fit to the duration, deterministically.

Everything is counted in frames of the film (``fps`` exact, a Fraction), so the same results
folder and options always give the same cut. The steps:

1. **Score.** Each shot's score is ``sum(weight[a] * attributes[a])`` over the profile's
   attributes present in the results, weights normalised to sum to 1 (``profiles.resolve``);
   an attribute a single shot lacks counts 0 for it. The per-attribute products are the pick's
   *contributions*. Shots are ranked by score, highest first; ties go to the earlier shot.
2. **Clip lengths.** ``--min-clip`` / ``--max-clip`` become frame counts (``ceil(min * fps)``,
   ``floor(max * fps)``); the requested duration is ``round(duration * fps)`` frames. A shot
   shorter than the minimum clip cannot be used. A usable shot gives a clip of at most
   ``min(its length, max clip)`` frames.
3. **Pick.** The film is cut into ``B = ceil(target frames / max clip frames)`` equal spans of
   film time (*buckets*; a shot belongs to the bucket of its middle frame). Walking the ranking,
   a shot is picked unless it is too short, is next to a shot already picked (its neighbour in
   shot order; ``--allow-adjacent`` lifts this rule) or its bucket already holds a pick; picking
   stops as soon as the picks' longest clips reach the requested duration. If the whole ranking
   cannot fill it, a second pass walks the shots refused only for their bucket, in rank order,
   and picks them under the adjacency rule alone (the cut then leans on some part of the film,
   which beats a short cut). If that is still not enough, the cut uses every usable shot and a
   warning says how long it is.
4. **Trim.** Each clip is a window of its shot around the shot's *peak*: the middle one of the
   shot's sampled frames (``sample_frames``; the third of the usual five; the shot's middle
   frame if none were sampled). Results hold one score per shot, not per frame, so the middle
   sample stands for the shot; the window is centred on it and moved inside the shot where it
   would cross a cut.
5. **Fit.** Clips start at their longest; the frames over the requested duration are taken off
   the last pick first (the lowest ranked), down to the minimum clip, then off the pick before
   it, and so on: the cut is exactly the requested number of frames, within one frame of the
   requested seconds. When even every clip at its minimum is too long (a few long picks of
   short shots), the last pick is dropped and a warning gives the length reached.

The order of the picks in the cut (the arc) is ``client.trailer.arc``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

PICKED = "picked"
REJECTED = "rejected"
NOT_NEEDED = "not needed"


@dataclass(frozen=True)
class Shot:
    """One shot of the results: frames inclusive, fused scores, sampled frame numbers."""

    shot_id: int
    start_frame: int
    end_frame: int
    attributes: Mapping[str, float]
    sample_frames: tuple[int, ...] = ()
    caption: str | None = None

    @property
    def frame_count(self) -> int:
        """Frames in the shot."""
        return self.end_frame - self.start_frame + 1

    @property
    def peak_frame(self) -> int:
        """The frame a clip is centred on: the middle sampled frame inside the shot, else the
        shot's middle frame (see the module doc, step 4)."""
        inside = [f for f in self.sample_frames if self.start_frame <= f <= self.end_frame]
        if inside:
            return inside[len(inside) // 2]
        return (self.start_frame + self.end_frame) // 2

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Shot:
        """A shot from one shots.jsonl record (numeric attributes only)."""
        attrs = record.get("attributes") or {}
        return cls(
            shot_id=int(record["shot_id"]),
            start_frame=int(record["start_frame"]),
            end_frame=int(record["end_frame"]),
            attributes={
                str(k): float(v)
                for k, v in attrs.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            sample_frames=tuple(int(f) for f in record.get("sample_frames") or ()),
            caption=record.get("caption"),
        )


@dataclass(frozen=True)
class CutSettings:
    """What the cut must be: total seconds, clip bounds in seconds, the adjacency rule."""

    duration: float
    min_clip: float = 1.0
    max_clip: float = 4.0
    allow_adjacent: bool = False

    def __post_init__(self) -> None:
        for name in ("duration", "min_clip", "max_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a number > 0, not {value}")
        if self.min_clip > self.max_clip:
            raise ValueError(
                f"--min-clip ({self.min_clip:g} s) is longer than --max-clip ({self.max_clip:g} s)"
            )
        if self.duration < self.min_clip:
            raise ValueError(
                f"--duration ({self.duration:g} s) is shorter than --min-clip "
                f"({self.min_clip:g} s): not even one clip fits"
            )


@dataclass(frozen=True)
class FrameBudget:
    """The settings in frames of the film: requested total and clip bounds."""

    target: int
    min_clip: int
    max_clip: int

    @classmethod
    def of(cls, settings: CutSettings, fps: Fraction) -> FrameBudget:
        """Frame counts for ``settings`` at ``fps`` (ValueError when no clip length fits)."""
        lo = max(1, math.ceil(Fraction(settings.min_clip) * fps - Fraction(1, 10**6)))
        hi = math.floor(Fraction(settings.max_clip) * fps + Fraction(1, 10**6))
        target = round(Fraction(settings.duration) * fps)
        if hi < lo:
            raise ValueError(
                f"no whole number of frames at {float(fps):g} fps lies between --min-clip "
                f"{settings.min_clip:g} s and --max-clip {settings.max_clip:g} s"
            )
        return cls(target=max(target, lo), min_clip=lo, max_clip=hi)


@dataclass(frozen=True)
class Candidate:
    """A shot in the ranking: its score and contributions, what happened to it and why."""

    shot: Shot
    rank: int
    score: float
    contributions: Mapping[str, float]
    bucket: int
    status: str = NOT_NEEDED
    reason: str = "the picks above it already fill the duration"


@dataclass(frozen=True)
class Clip:
    """A picked shot trimmed to ``frames`` frames from ``source_in`` (first frame)."""

    candidate: Candidate
    source_in: int
    frames: int
    pass_number: int

    @property
    def source_out(self) -> int:
        """The clip's last frame (inclusive)."""
        return self.source_in + self.frames - 1


@dataclass(frozen=True)
class Selection:
    """The picks in pick (rank) order, the whole ranking, the budget and what went short."""

    clips: tuple[Clip, ...]
    ranking: tuple[Candidate, ...]
    budget: FrameBudget
    buckets: int
    film_frames: tuple[int, int]
    warnings: tuple[str, ...] = field(default=())

    @property
    def frames(self) -> int:
        """Frames in the cut."""
        return sum(c.frames for c in self.clips)


def score(shot: Shot, weights: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """The shot's weighted score and each attribute's contribution (step 1)."""
    parts = {a: w * float(shot.attributes.get(a, 0.0)) for a, w in weights.items()}
    return sum(parts.values()), parts


def rank(shots: Sequence[Shot], weights: Mapping[str, float], buckets: int) -> list[Candidate]:
    """Every shot as a candidate, best first (ties: earlier shot first)."""
    first = min(s.start_frame for s in shots)
    span = max(s.end_frame for s in shots) + 1 - first
    scored = []
    for shot in shots:
        value, parts = score(shot, weights)
        middle = (shot.start_frame + shot.end_frame) // 2 - first
        bucket = min(buckets - 1, middle * buckets // max(1, span))
        scored.append((value, shot, parts, bucket))
    scored.sort(key=lambda item: (-item[0], item[1].start_frame, item[1].shot_id))
    return [
        Candidate(shot=s, rank=i + 1, score=v, contributions=p, bucket=b)
        for i, (v, s, p, b) in enumerate(scored)
    ]


def select(
    shots: Sequence[Shot], weights: Mapping[str, float], settings: CutSettings, fps: Fraction
) -> Selection:
    """Pick, trim and fit the clips of the cut (steps 2-5 of the module doc)."""
    if not shots:
        raise ValueError("the results hold no shots")
    ordered = sorted(shots, key=lambda s: (s.start_frame, s.shot_id))
    position = {s.shot_id: i for i, s in enumerate(ordered)}
    budget = FrameBudget.of(settings, fps)
    buckets = max(1, math.ceil(budget.target / budget.max_clip))
    ranking = rank(ordered, weights, buckets)
    decided: dict[int, Candidate] = {}
    picks: list[tuple[Candidate, int]] = []  # (candidate, pass)
    held: dict[int, int] = {}  # bucket -> shot id picked there

    def longest(c: Candidate) -> int:
        return min(c.shot.frame_count, budget.max_clip)

    def filled() -> bool:
        return sum(longest(c) for c, _ in picks) >= budget.target

    def neighbour(c: Candidate) -> int | None:
        if settings.allow_adjacent:
            return None
        here = position[c.shot.shot_id]
        for other, _ in picks:
            if abs(position[other.shot.shot_id] - here) == 1:
                return other.shot.shot_id
        return None

    bucket_refused: list[Candidate] = []
    for cand in ranking:
        if filled():
            break
        if cand.shot.frame_count < budget.min_clip:
            decided[cand.rank] = replace(cand, status=REJECTED, reason="shorter than --min-clip")
            continue
        near = neighbour(cand)
        if near is not None:
            decided[cand.rank] = replace(
                cand, status=REJECTED, reason=f"next to shot {near}, picked already"
            )
            continue
        if cand.bucket in held:
            decided[cand.rank] = replace(
                cand,
                status=REJECTED,
                reason=f"film-time bucket {cand.bucket + 1}/{buckets} holds shot "
                f"{held[cand.bucket]} already",
            )
            bucket_refused.append(cand)
            continue
        held[cand.bucket] = cand.shot.shot_id
        picks.append((cand, 1))
    for cand in bucket_refused:  # second pass: the bucket rule relaxed (module doc, step 3)
        if filled():
            break
        near = neighbour(cand)
        if near is None:
            picks.append((cand, 2))
        else:
            why = f"bucket taken, and in the second pass next to shot {near}, picked already"
            decided[cand.rank] = replace(cand, status=REJECTED, reason=why)
    warnings: list[str] = []
    clips = _fit(picks, budget, fps, warnings)
    chosen = {c.candidate.rank: c for c in clips}
    for cand, _ in picks:
        if cand.rank not in chosen:
            why = "dropped: with its clip the cut cannot be made exactly the duration"
            decided[cand.rank] = replace(cand, status=REJECTED, reason=why)
    final = []
    for cand in ranking:
        if cand.rank in chosen:
            why = _pick_reason(chosen[cand.rank], budget, buckets)
            final.append(replace(cand, status=PICKED, reason=why))
        else:
            final.append(decided.get(cand.rank, cand))
    clips = tuple(replace(c, candidate=final[c.candidate.rank - 1]) for c in clips)
    span = (ordered[0].start_frame, max(s.end_frame for s in ordered))
    return Selection(clips, tuple(final), budget, buckets, span, tuple(warnings))


def _pick_reason(clip: Clip, budget: FrameBudget, buckets: int) -> str:
    """Why a pick was made and how it was trimmed, in one sentence."""
    cand = clip.candidate
    why = f"rank {cand.rank} by weighted score"
    if clip.pass_number == 2:
        why += "; second pass (the bucket rule relaxed to fill the duration)"
    else:
        why += f"; first pick in film-time bucket {cand.bucket + 1}/{buckets}"
    if clip.frames < cand.shot.frame_count:
        why += f"; trimmed to {clip.frames} of {cand.shot.frame_count} frames around frame "
        why += f"{cand.shot.peak_frame}"
    return why


def _fit(
    picks: Sequence[tuple[Candidate, int]], budget: FrameBudget, fps: Fraction, warnings: list[str]
) -> tuple[Clip, ...]:
    """Clip lengths summing to the target (module doc, step 5) and each clip's window."""
    picks = list(picks)
    while picks:
        lengths = [min(c.shot.frame_count, budget.max_clip) for c, _ in picks]
        excess = sum(lengths) - budget.target
        for i in range(len(lengths) - 1, -1, -1):
            if excess <= 0:
                break
            take = min(excess, lengths[i] - budget.min_clip)
            lengths[i] -= take
            excess -= take
        if excess <= 0:
            break
        dropped = picks.pop()[0]
        warnings.append(
            f"with clips of {budget.min_clip}-{budget.max_clip} frames the picks cannot make "
            f"exactly {budget.target} frames; shot {dropped.shot.shot_id} is left out"
        )
    else:
        lengths = []
    total = sum(lengths)
    if total < budget.target:
        warnings.append(
            f"the film's usable shots fill only {float(total / fps):.3f} s of the "
            f"{float(budget.target / fps):.3f} s asked for ({total} of {budget.target} frames): "
            "the cut uses what exists"
        )
    return tuple(
        Clip(candidate=c, source_in=_window(c.shot, n), frames=n, pass_number=p)
        for (c, p), n in zip(picks, lengths, strict=True)
    )


def _window(shot: Shot, frames: int) -> int:
    """The first frame of a ``frames``-long window centred on the shot's peak, inside it."""
    start = shot.peak_frame - frames // 2
    return max(shot.start_frame, min(start, shot.end_frame + 1 - frames))
