"""Writing a trailer cut: the timeline (OTIO / EDL / FCP X XML) and the ``cut.json`` beside it.

The timeline holds one clip per pick, in cut order, each referencing the film (the path the
results folder recorded, else its name) at its source frames, with a marker naming its act,
position, shot and score; ``client.export.timeline`` writes it in the format of the file name.

``cut.json`` (same folder as the timeline) explains the cut: the profile (weights as given and
as used, attributes the results lack and their share of the weight), the settings, the film,
the requested and achieved length, every clip in cut order (shot id, rank, act, weighted score
and each attribute's contribution, source in/out as frames, seconds and timecodes, record
in/out in the cut, the peak frame it was trimmed around and why it was picked), the top of the
ranking with why each was picked or not, the arc (act sizes, the target curve and the picks'
levels in cut order, ready to draw) and any warnings. It depends on nothing but its inputs
(no clock, sorted nowhere it would not be already, floats rounded to 6 places), so the same
results folder and options give a byte-identical file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio

from client.errors import UsageError
from client.export.results import Film
from client.export.timeline import ClipSpec, build_timeline, write_timeline
from client.trailer import arc
from client.trailer.arc import Placed
from client.trailer.profiles import Weighting
from client.trailer.selection import Candidate, CutSettings, Selection

CUT_JSON = "cut.json"
CUT_FORMAT = 1
TOP_CANDIDATES = 10  # cut.json lists at least this many of the ranking (3 per pick if more)


def _r(value: float | Fraction) -> float:
    """A float as cut.json writes it (6 decimal places: stable and readable)."""
    return round(float(value), 6)


def timecode(frame: int, fps: Fraction) -> str:
    """SMPTE timecode of ``frame`` at ``fps`` (drop-frame ';' at 29.97 / 59.94, as OTIO)."""
    return str(otio.opentime.to_timecode(otio.opentime.RationalTime(frame, float(fps))))


def _candidate(c: Candidate) -> dict[str, Any]:
    """One ranking entry of cut.json."""
    return {
        "rank": c.rank,
        "shot_id": c.shot.shot_id,
        "score": _r(c.score),
        "status": c.status,
        "reason": c.reason,
        "bucket": c.bucket + 1,
        "frames": c.shot.frame_count,
        "contributions": {a: _r(v) for a, v in c.contributions.items()},
    }


def _clip(p: Placed, fps: Fraction) -> dict[str, Any]:
    """One clip of cut.json (frames inclusive; ``*_out_seconds`` / timecodes exclusive)."""
    clip, cand = p.clip, p.clip.candidate
    return {
        "position": p.position,
        "act": p.act,
        "shot_id": cand.shot.shot_id,
        "rank": cand.rank,
        "score": _r(cand.score),
        "contributions": {a: _r(v) for a, v in cand.contributions.items()},
        "frames": clip.frames,
        "seconds": _r(clip.frames / fps),
        "source_in_frame": clip.source_in,
        "source_out_frame": clip.source_out,
        "source_in_seconds": _r(clip.source_in / fps),
        "source_out_seconds": _r((clip.source_out + 1) / fps),
        "source_in_timecode": timecode(clip.source_in, fps),
        "source_out_timecode": timecode(clip.source_out + 1, fps),
        "record_in_frame": p.record_in,
        "record_out_frame": p.record_out - 1,
        "record_in_timecode": timecode(p.record_in, fps),
        "record_out_timecode": timecode(p.record_out, fps),
        "shot": {
            "start_frame": cand.shot.start_frame,
            "end_frame": cand.shot.end_frame,
            "frames": cand.shot.frame_count,
        },
        "peak_frame": cand.shot.peak_frame,
        "caption": cand.shot.caption,
        "why": cand.reason,
    }


def _arc(placed: Sequence[Placed], fps: Fraction) -> dict[str, Any]:
    """The arc section: act sizes, the target curve's corners, the picks in cut order."""
    points = arc.curve_points(placed)
    levels = arc.score_levels(placed)
    picks = []
    for p, level in zip(placed, levels, strict=True):
        middle = (p.record_in + p.record_out) / 2
        picks.append(
            {
                "position": p.position,
                "shot_id": p.clip.candidate.shot.shot_id,
                "act": p.act,
                "score": _r(p.clip.candidate.score),
                "level": _r(level),
                "middle_seconds": _r(Fraction(middle) / fps),
                "target_level": _r(arc.target_level(points, middle)),
            }
        )
    return {
        "acts": {act: sum(1 for p in placed if p.act == act) for act in arc.ACTS},
        "rule": (
            "picks sorted by score (ties: earlier shot first): the top ceil(n/3) are the peak, "
            "the lowest (n - peak) // 2 the opening (cut in film order), the rest the build; "
            "build and peak in rising score, so the cut ends on its highest-scoring pick"
        ),
        "target_curve": [
            {"frame": f, "seconds": _r(Fraction(f) / fps), "level": level} for f, level in points
        ],
        "picks": picks,
    }


def cut_document(
    selection: Selection,
    placed: Sequence[Placed],
    weighting: Weighting,
    settings: CutSettings,
    film: Film,
    timeline_name: str,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole cut.json content (see the module doc)."""
    fps = film.fps
    profile = weighting.profile
    top = max(TOP_CANDIDATES, 3 * len(placed))
    frames = sum(p.clip.frames for p in placed)
    return {
        "format": CUT_FORMAT,
        "timeline": timeline_name,
        "profile": {
            "name": profile.name,
            "source": profile.source,
            "description": profile.description,
            "weights": {a: _r(w) for a, w in profile.weights.items()},
            "weights_used": {a: _r(w) for a, w in weighting.weights.items()},
            "missing_attributes": list(weighting.missing),
            "missing_share": _r(weighting.missing_share),
        },
        "settings": {
            "duration": settings.duration,
            "min_clip": settings.min_clip,
            "max_clip": settings.max_clip,
            "allow_adjacent": settings.allow_adjacent,
            "min_clip_frames": selection.budget.min_clip,
            "max_clip_frames": selection.budget.max_clip,
            "buckets": selection.buckets,
        },
        "film": {
            "name": film.name,
            "path": str(film.path) if film.path is not None else None,
            "fps": f"{fps.numerator}/{fps.denominator}",
            "fps_float": _r(fps),
            "first_frame": selection.film_frames[0],
            "last_frame": selection.film_frames[1],
        },
        "target": {"frames": selection.budget.target, "seconds": _r(selection.budget.target / fps)},
        "achieved": {
            "frames": frames,
            "seconds": _r(frames / fps),
            "difference_frames": frames - selection.budget.target,
            "clips": len(placed),
        },
        "clips": [_clip(p, fps) for p in placed],
        "candidates": [_candidate(c) for c in selection.ranking[:top]],
        "arc": _arc(placed, fps),
        "warnings": list(warnings),
    }


def timeline_clips(placed: Sequence[Placed]) -> list[ClipSpec]:
    """One ``ClipSpec`` per placed clip, in cut order, each with a marker naming it."""
    specs = []
    for p in placed:
        cand = p.clip.candidate
        label = f"{p.act} {p.position}: shot {cand.shot.shot_id} score {cand.score:.3f}"
        specs.append(
            ClipSpec(
                source_in=p.clip.source_in,
                source_out=p.clip.source_out + 1,
                name=f"shot {cand.shot.shot_id}",
                marker_name=label,
                marker_metadata={"act": p.act, "rank": cand.rank, "score": _r(cand.score)},
                metadata={
                    "qwen_trailer": {"act": p.act, "shot_id": cand.shot.shot_id, "rank": cand.rank}
                },
            )
        )
    return specs


def write_cut(out: Path, document: dict[str, Any], placed: Sequence[Placed], film: Film) -> Path:
    """Write the timeline ``out`` and ``cut.json`` beside it; returns the cut.json path."""
    timeline = build_timeline(
        timeline_clips(placed),
        media_path=film.path,
        fps=film.fps,
        name=f"{Path(film.name).stem} trailer ({document['profile']['name']})",
        media_name=film.name,
        media_frames=film.frame_count,
    )
    write_timeline(timeline, out)
    path = out.parent / CUT_JSON
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
    return path
