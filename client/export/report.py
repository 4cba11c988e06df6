"""``report.html``: one self-contained page that shows a results folder to a person.

The page holds a contact sheet (a tile per shot: thumbnail, timecode, duration, caption, audio
class, top three attributes, dialogue/music share, loudness, tempo and beats, the transitions in
and out), the film's arc (every attribute as a curve over film time, each
one shown or hidden by a checkbox, the shots as a strip under it), sorting and filtering of the
tiles by any attribute, the summary (means, peaks, audio classes, length, shot count) and an
embedded ``<video>`` that plays a shot when its tile or one of its points is clicked.

Why it is built this way:

- **No network at all.** CSS, JS and the data are inlined (``report_assets/`` holds them as
  separate files to keep this module small); the charts are inline SVG drawn by the page's JS.
  No CDN, no web font: it opens the same on a laptop in a train as on the editing suite.
- **Thumbnails and the film are linked, not embedded**, by paths relative to the report's
  folder (``frames/shot00001_f0000012.jpg``, ``../film.mp4``). Embedding a 2,000-shot film's
  JPEGs as data URIs would make a page of tens of MiB that a browser parses before showing
  anything; linked images load lazily as the sheet scrolls. The report therefore lives with its
  results folder (its default place). Only images that exist when the report is written are
  linked, so a browser never logs a failed load; a film that cannot be found next to the
  results (or at the path run.json records) gives no video element and a note that says so.
- **Every text from the results is data, never markup.** The records go into a
  ``<script type="application/json">`` block with ``</`` written as ``<\\/`` (and ``<!--`` as
  ``\\u003c!--``), so a caption holding ``</script><script>...`` cannot end the block, and the
  page builds its DOM with ``textContent`` only.
- **Any vocabulary.** Attribute names come from the records (6, 38 or any other list); a
  ``shots``-only folder (no attributes) gets the contact sheet and timing, and no arc.
- **The trailer cut, when there is one.** ``qwen-client trailer`` writes ``cut.json`` beside its
  timeline; when that is ``RESULTS_DIR/cut.json`` the page gets a "Trailer cut" section: the
  profile, the length asked and achieved, the cut's arc (target curve and each pick's level over
  cut time, acts shaded) and the picks in cut order, each playing its source range. Only the
  fields drawn are taken (``cut_data``); a cut.json that cannot be read or lacks them is left
  out with a note in the page, never an error of the report, which is about the results.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import os
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from client.errors import UsageError
from client.export.results import Results, ShotRecord, load_results
from client.export.shot_facts import edit_facts, edit_summary, sound_facts

log = logging.getLogger("client.export")

REPORT = "report.html"
CUT_JSON = "cut.json"  # what ``client.trailer.cut`` writes beside the trailer's timeline
ASSETS = "report_assets"
# Frame-path fields of a record, newest name first (``shots`` writes ``images`` today).
FRAME_FIELDS = ("frames", "images")
TOP_ATTRIBUTES = 3


def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Write the report of ``results_dir`` and return its path.

    ``out`` is the file to write (a directory: ``report.html`` in it); None writes
    ``report.html`` in the results folder. Raises InputError (exit 2) when ``results_dir`` is
    not a results folder and UsageError (exit 2) when the report cannot be written.
    """
    results = load_results(Path(results_dir))
    target = _target(results.directory, out)
    page = render_report(results, target.parent)
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        raise UsageError(f"cannot write the report to {target} ({reason})") from None
    log.info("report of %d shots written to %s", len(results.shots), target)
    return target


def _target(results_dir: Path, out: Path | None) -> Path:
    """The report file: ``out`` (a directory gets ``report.html``), else in the results."""
    if out is None:
        return results_dir / REPORT
    out = Path(out).expanduser()
    if out.is_dir():
        out = out / REPORT
    return out.resolve()


def render_report(results: Results, report_dir: Path) -> str:
    """The page's HTML for a report written in ``report_dir`` (links are relative to it)."""
    data = report_data(results, report_dir)
    template = _asset("template.html")
    parts = {
        "@TITLE@": html.escape(f"{results.film.name} - shot report"),
        "/*@CSS@*/": _asset("report.css"),
        "@DATA@": embed_json(data),
        # cut.js first: it defines ReportCut, which report.js calls when there is a cut.
        "/*@JS@*/": _asset("cut.js") + "\n" + _asset("report.js"),
    }
    # Markers in template order, each looked for in the rest of the template only, so text
    # inserted before (a caption holding "/*@JS@*/") is never mistaken for a marker.
    page, rest = [], template
    for marker, text in parts.items():
        before, sep, rest = rest.partition(marker)
        if not sep:
            raise RuntimeError(f"the report template lacks {marker}")
        page += [before, text]
    return "".join([*page, rest])


def _asset(name: str) -> str:
    """One file of ``report_assets`` (shipped as package data)."""
    return resources.files("client.export").joinpath(ASSETS, name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: ``</`` cannot close it
    and ``<!--`` cannot open the parser's escaped states; JSON.parse reads it unchanged."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "\\u003c!--")


def report_data(results: Results, report_dir: Path) -> dict[str, Any]:
    """Everything the page shows, as plain JSON (attribute values as arrays in vocabulary
    order, to keep a 2,000-shot, 38-attribute film's page small)."""
    vocabulary = list(results.vocabulary)
    src, note = film_link(results, report_dir)
    duration = _film_duration(results)
    film = results.film
    data: dict[str, Any] = {
        "film": {
            "name": film.name,
            "fps": round(float(film.fps), 6),
            "width": film.width,
            "height": film.height,
            "duration": duration,
            "src": src,
            "note": note,
        },
        "vocabulary": vocabulary,
        "shots": [_shot_data(s, vocabulary, results.directory, report_dir) for s in results.shots],
        "summary": _summary(results, vocabulary, duration),
    }
    cut_file = results.directory / CUT_JSON
    if cut_file.is_file():
        data["cut"] = cut_data(cut_file, film.name)
    return data


def cut_data(path: Path, film_name: str) -> dict[str, Any]:
    """What the page's "Trailer cut" section draws from ``path`` (a trailer's cut.json), or
    ``{"note": ...}`` saying why it cannot be drawn (unreadable, not JSON, fields missing)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return _cut_section(doc, film_name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        if isinstance(exc, KeyError):
            reason = f"no {exc} field"
        log.warning("%s is not a trailer cut the report can show (%s)", path, reason)
        return {
            "note": f"{path.name} is here but cannot be shown ({reason}); run 'qwen-client "
            "trailer' again to rewrite it."
        }


def _cut_section(doc: Any, film_name: str) -> dict[str, Any]:
    """The cut section's data from a parsed cut.json; raises on a missing or mistyped field."""
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    fps = _number(doc["film"]["fps_float"])
    if fps <= 0:
        raise ValueError(f"fps {fps} is not positive")
    arc = doc["arc"]
    levels = {int(p["position"]): p for p in arc["picks"]}
    picks = []
    for clip in doc["clips"]:
        position = int(clip["position"])
        level = levels[position]
        picks.append(
            {
                "position": position,
                "act": str(clip["act"]),
                "shot": int(clip["shot_id"]),
                "start": _number(clip["source_in_seconds"]),
                "end": _number(clip["source_out_seconds"]),
                "tc": str(clip["source_in_timecode"]),
                "tcEnd": str(clip["source_out_timecode"]),
                "recIn": round(int(clip["record_in_frame"]) / fps, 6),
                "recOut": round((int(clip["record_out_frame"]) + 1) / fps, 6),
                "score": _number(clip["score"]),
                "level": _number(level["level"]),
                "target": _number(level["target_level"]),
                "why": str(clip["why"]),
                "caption": _text(clip.get("caption")),
            }
        )
    if not picks:
        raise ValueError("no clips")
    curve = [[_number(c["seconds"]), _number(c["level"])] for c in arc["target_curve"]]
    profile, achieved = doc["profile"], doc["achieved"]
    cut_film = str(doc["film"]["name"])
    return {
        "profile": str(profile["name"]),
        "description": _text(profile.get("description")),
        "timeline": str(doc.get("timeline") or ""),
        "asked": _number(doc["settings"]["duration"]),
        "achieved": _number(achieved["seconds"]),
        "clips": len(picks),
        "picks": picks,
        "curve": curve,
        "warnings": [str(w) for w in doc.get("warnings") or []],
        "otherFilm": cut_film if cut_film != film_name else None,
    }


def _text(value: Any) -> str | None:
    """``value`` when it is a non-empty string, else None (optional text fields)."""
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float:
    """A finite JSON number (bools are not), rounded to 6 places; anything else: ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    return round(float(value), 6)


def _shot_data(
    shot: ShotRecord, vocabulary: list[str], results_dir: Path, report_dir: Path
) -> dict[str, Any]:
    """One shot for the page: timing, text, thumbnail link, values (None: not scored)."""
    raw = shot.raw
    values = [_round(shot.attributes.get(name)) for name in vocabulary]
    return {
        "id": shot.shot_id,
        "start": round(shot.start_time, 6),
        "end": round(shot.end_time, 6),
        "tc": _timecode(raw, "start", shot.start_time),
        "tcEnd": _timecode(raw, "end", shot.end_time),
        "frames": shot.frame_count,
        "caption": shot.caption if isinstance(shot.caption, str) else None,
        "audio": str(shot.audio_class) if shot.audio_class is not None else None,
        "thumb": _thumbnail(raw, results_dir, report_dir),
        "sound": sound_facts(raw),
        "edit": edit_facts(raw),
        "top": [
            [vocabulary.index(name), _round(value)]
            for name, value in shot.top_attributes(TOP_ATTRIBUTES)
            if name in vocabulary
        ],
        "v": values,
    }


def _round(value: float | None) -> float | None:
    """A score rounded to 4 places (None and non-finite values: None)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)


def _timecode(raw: Any, end: str, seconds: float) -> str:
    """The shot's SMPTE timecode when the record has one, else its ms timecode."""
    for key in (f"{end}_smpte", f"{end}_timecode"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _thumbnail(raw: Any, results_dir: Path, report_dir: Path) -> str | None:
    """A link to the shot's middle sample frame, relative to the report's folder, when that
    JPEG exists (a missing one would be a failed load in the browser)."""
    for key in FRAME_FIELDS:
        paths = raw.get(key)
        if isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths):
            frame = (results_dir / paths[len(paths) // 2]).resolve()
            if frame.is_file():
                return relative_url(frame, report_dir)
    return None


def relative_url(path: Path, report_dir: Path) -> str:
    """``path`` as a URL relative to ``report_dir`` (percent-encoded, ``/`` separated)."""
    rel = os.path.relpath(path, report_dir.resolve())
    return quote(Path(rel).as_posix())


def film_link(results: Results, report_dir: Path) -> tuple[str | None, str | None]:
    """The film's URL relative to the report (None when it cannot be found) and, then, the
    note the page shows instead of a player.

    Looked for at the path run.json records, then by name next to the results folder
    (``../film.mp4``, the usual layout) and inside it; a file whose size differs from the
    one run.json fingerprinted is another film and is not used."""
    film = results.film
    candidates = [film.path] if film.path is not None else []
    candidates += [results.directory.parent / film.name, results.directory / film.name]
    fingerprint = results.manifest.get("film")
    size = fingerprint.get("size") if isinstance(fingerprint, dict) else None
    for path in candidates:
        try:
            if path.is_file() and (not isinstance(size, int) or path.stat().st_size == size):
                return relative_url(path.resolve(), report_dir), None
        except OSError:
            continue
    where = film.path if film.path is not None else results.directory.parent / film.name
    return None, (
        f"The film ({film.name}) is not reachable from this report's folder (looked for "
        f"{where}), so shots cannot be played here. Keep the report in its results folder "
        "next to the film to play them."
    )


def _film_duration(results: Results) -> float:
    """The film's length in seconds: summary.json's, else the end of the last shot."""
    value = results.summary.get("duration")
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return round(float(value), 6)
    return round(results.shots[-1].end_time, 6)


def _summary(results: Results, vocabulary: list[str], duration: float) -> dict[str, Any]:
    """Length, shot count, mean shot length, audio classes, and per attribute the mean over
    the shots scored on it and the peak (value, shot, timecode), from the records."""
    shots = results.shots
    attributes = []
    for index, name in enumerate(vocabulary):
        scored = [(s.attributes[name], s) for s in shots if name in s.attributes]
        if not scored:
            continue
        peak_value, peak = max(scored, key=lambda vs: (vs[0], -vs[1].shot_id))
        attributes.append(
            {
                "index": index,
                "mean": _round(sum(v for v, _ in scored) / len(scored)),
                "peak": _round(peak_value),
                "peakShot": peak.shot_id,
                "peakTc": _timecode(peak.raw, "start", peak.start_time),
                "scored": len(scored),
            }
        )
    classes = Counter(str(s.audio_class) for s in shots if s.audio_class is not None)
    model = results.summary.get("model")
    return {
        "duration": duration,
        "shotCount": len(shots),
        "meanShot": round(sum(s.end_time - s.start_time for s in shots) / len(shots), 3),
        "audioClasses": sorted(classes.items(), key=lambda kv: (-kv[1], kv[0])),
        "model": model if isinstance(model, str) else None,
        "attributes": attributes,
        "analysed": results.analysed,
        "edit": edit_summary(s.raw for s in shots),
    }
