"""Export a results folder in one editor format (``qwen-client export``), and the defaults
``analyze`` writes at the end (``write_default_exports``).

Formats: ``otio`` (OpenTimelineIO JSON), ``edl`` (CMX 3600), ``fcpxml`` (FCP X XML), ``csv``
(shots.csv, rewritten from shots.jsonl) and ``html`` (the report of ``client.export.report``,
when that module is installed). The three timelines hold one clip per shot, in shot order, cut
from the film at its own rate, each with one marker on its first frame:

* OTIO: the marker's name is the caption; ``metadata["qwen"]`` holds the shot id, its frames,
  timecodes (the record's ``start_timecode``/``end_timecode`` and SMPTE ``start_smpte``/
  ``end_smpte``, computed at the film's rate when the record has none), the audio class, every
  attribute and its top three, and (``client.export.shot_facts``) ``sound`` (speech and music
  shares, LUFS, loudness range, tempo, beat times) and ``edit`` (usable in/out times, the
  transitions in and out, black segments) when the results carry them.
* EDL and FCP X XML: the marker's name is "caption | top three attributes with scores".

Markers in the EDL: ``otio-cmx3600-adapter`` writes each marker as an Avid locator comment,
``* LOC: hh:mm:ss:ff COLOR TEXT`` (text upper-cased, timecode in source time), the line
DaVinci Resolve and Avid read as a marker on EDL import. The shots are laid end to end from
frame 0, so source and record timecode are the same and the locators land on the right frame
of the timeline too; the standard EDL therefore carries the markers and no separate marker EDL
is written. At 29.97/59.94 the timecodes are drop-frame (``;``, with ``FCM: DROP FRAME``);
note that the adapter's own reader skips drop-frame ``LOC`` lines (its pattern wants ``:``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import opentimelineio as otio

from client.export import DEFAULT_NAMES, FORMATS
from client.export.report import write_report
from client.export.results import Results, ShotRecord, load_results
from client.export.shot_facts import edit_facts, sound_facts
from client.export.timeline import ClipSpec, ExportError, build_timeline, write_timeline

log = logging.getLogger("client.export")

METADATA_KEY = "qwen"
TOP_N = 3


def export(results_dir: Path, fmt: str, out: Path | None = None) -> Path:
    """Write ``results_dir`` in format ``fmt`` to ``out`` (default: ``DEFAULT_NAMES`` in the
    folder); returns the file written. ExportError/InputError (exit 2) on bad input."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    results = load_results(results_dir)
    target = Path(out) if out is not None else results.directory / DEFAULT_NAMES[fmt]
    suffix = Path(DEFAULT_NAMES[fmt]).suffix
    if target.suffix.lower() != suffix:
        raise ExportError(f"an {fmt} export is written to a {suffix} file, not {target}")
    if fmt == "html":
        return _write_report(results.directory, target)
    if fmt == "csv":
        return _write_csv(results, target)
    return write_timeline(shot_timeline(results, editor_markers=fmt != "otio"), target)


def write_default_exports(results_dir: Path) -> list[Path]:
    """What ``analyze`` writes at the end: timeline.otio and report.html. Returns the files
    written."""
    return [export(results_dir, "otio"), export(results_dir, "html")]


def shot_timeline(results: Results, *, editor_markers: bool = False) -> otio.schema.Timeline:
    """The film's shots as one timeline (see module doc); ``editor_markers`` names the markers
    "caption | top scores" for EDL/FCP X XML instead of the caption alone."""
    fps = results.film.fps
    clips = [
        ClipSpec(
            source_in=shot.start_frame,
            source_out=shot.end_frame + 1,
            name=f"shot {shot.shot_id}",
            marker_name=editor_marker_name(shot) if editor_markers else marker_name(shot),
            marker_metadata={METADATA_KEY: shot_metadata(shot, float(fps))},
            metadata={METADATA_KEY: {"shot_id": shot.shot_id}},
        )
        for shot in results.shots
    ]
    media = results.film.path
    return build_timeline(
        clips,
        media_path=media,
        fps=fps,
        name=Path(results.film.name).stem or results.film.name,
        media_name=results.film.name,
        media_frames=results.film.frame_count,
    )


def marker_name(shot: ShotRecord) -> str:
    """The caption, or "shot N" for a shot without one (a ``shots`` run)."""
    return shot.caption if shot.caption else f"shot {shot.shot_id}"


def top_scores_text(shot: ShotRecord, n: int = TOP_N) -> str:
    """ "suspense 0.82, darkness 0.77, intensity 0.40" (the ``n`` highest scores)."""
    return ", ".join(f"{name} {value:.2f}" for name, value in shot.top_attributes(n))


def editor_marker_name(shot: ShotRecord) -> str:
    """The marker text of an EDL / FCP X XML: "caption | top scores" (on one line)."""
    caption = " ".join(marker_name(shot).split())
    scores = top_scores_text(shot)
    return f"{caption} | {scores}" if scores else caption


def smpte(frame: int, rate: float) -> str:
    """SMPTE timecode of a frame at ``rate`` (drop-frame ';' at 29.97/59.94, as OTIO infers)."""
    return otio.opentime.to_timecode(otio.opentime.RationalTime(frame, rate), rate)


def shot_metadata(shot: ShotRecord, rate: float) -> dict[str, Any]:
    """What a shot's marker carries under ``metadata["qwen"]`` (JSON-safe values only)."""
    raw = shot.raw
    data: dict[str, Any] = {
        "shot_id": shot.shot_id,
        "start_frame": shot.start_frame,
        "end_frame": shot.end_frame,
        "start_time": shot.start_time,
        "end_time": shot.end_time,
        "start_timecode": raw.get("start_timecode"),
        "end_timecode": raw.get("end_timecode"),
        "start_smpte": raw.get("start_smpte") or smpte(shot.start_frame, rate),
        "end_smpte": raw.get("end_smpte") or smpte(shot.end_frame + 1, rate),
        "caption": shot.caption,
        "audio_class": shot.audio_class,
        "attributes": dict(shot.attributes),
        "top_attributes": [{"name": k, "score": v} for k, v in shot.top_attributes(TOP_N)],
    }
    for key in ("model_attributes", "measured"):
        if isinstance(raw.get(key), dict):
            data[key] = raw[key]
    # Speech, loudness, beats and the transitions, as the report shows them (shot_facts).
    data["sound"] = sound_facts(raw)
    data["edit"] = edit_facts(raw)
    return {k: v for k, v in data.items() if v is not None}


def _write_csv(results: Results, out: Path) -> Path:
    """shots.csv as ``analyze``/``shots`` write it, from the folder's records."""
    from client.outputs import shots_csv

    records = [dict(shot.raw) for shot in results.shots]
    text = shots_csv(records, results.analysed, list(results.vocabulary) or None)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, out)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc}") from None
    return out


def _write_report(results_dir: Path, out: Path) -> Path:
    """The HTML report (``client.export.report.write_report``)."""
    return write_report(results_dir, out)
