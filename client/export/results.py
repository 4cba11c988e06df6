"""A finished results folder (``qwen-client shots|analyze --out DIR``) read into typed objects.

Every editor export (OTIO, EDL, FCP X XML, CSV), the HTML report and the trailer cut read the
same folder, so they share this one reader: ``load_results(results_dir) -> Results``. It checks
that the folder is a results folder (``shots.jsonl`` present and parseable) and raises
``InputError`` (exit code 2) naming the problem otherwise, so no command shows a traceback for
a wrong folder.

The film's rate matters for every timeline: it comes from ``run.json["source"]["fps"]``
(``"num/den"``, written by newer clients), else from ``summary.json["film"]["fps"]`` (a float,
snapped to the standard broadcast rate it is closest to, e.g. 29.97 -> 30000/1001), else from
the records themselves (``start_frame / start_time`` of a shot that does not start at 0).
Optional record fields (``start_smpte``, ``model_attributes``, ``measured``, ``audio``,
``evidence``, ``generation``) are kept as they are in ``ShotRecord.raw``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from client.errors import InputError

log = logging.getLogger("client.export")

SHOTS = "shots.jsonl"
MANIFEST = "run.json"
SUMMARY = "summary.json"

# Rates a float fps is snapped to when it is this close (film, PAL, NTSC and their doubles).
STANDARD_RATES: tuple[Fraction, ...] = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)
_SNAP_TOLERANCE = 0.0002  # relative: 29.97 and 30 differ by 0.1 %, rounding errors are far less


@dataclass(frozen=True)
class ShotRecord:
    """One line of shots.jsonl. ``attributes`` are the fused scores (empty before analysis);
    ``raw`` is the whole record, for fields this class does not name."""

    shot_id: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    caption: str | None
    attributes: Mapping[str, float]
    audio_class: str | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def frame_count(self) -> int:
        """Frames in the shot (``end_frame`` is inclusive)."""
        return self.end_frame - self.start_frame + 1

    def top_attributes(self, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` highest scores, highest first (ties: vocabulary order)."""
        ranked = sorted(self.attributes.items(), key=lambda kv: -kv[1])
        return ranked[:n]


@dataclass(frozen=True)
class Film:
    """The analysed film: ``path`` is absolute when the run recorded it, else None (only the
    file name is known); ``frame_count`` is the film's length in frames when known."""

    name: str
    path: Path | None
    fps: Fraction
    width: int | None
    height: int | None
    frame_count: int | None = None
    drop_frame: bool | None = None


@dataclass(frozen=True)
class Results:
    """A results folder: its shots in shot order, the film, the attribute names in first-seen
    order, and summary.json / run.json as stored ({} when missing)."""

    directory: Path
    film: Film
    shots: tuple[ShotRecord, ...]
    vocabulary: tuple[str, ...]
    summary: Mapping[str, Any]
    manifest: Mapping[str, Any]

    @property
    def analysed(self) -> bool:
        """Whether the shots carry captions or scores (an ``analyze`` run, not ``shots``)."""
        return any(s.caption is not None or s.attributes for s in self.shots)


def load_results(results_dir: Path) -> Results:
    """Read the results folder ``results_dir``; InputError (exit 2) if it is not one."""
    results_dir = Path(results_dir).expanduser()
    if not results_dir.is_dir():
        raise InputError(f"{results_dir} is not a results folder (no such directory)")
    shots_path = results_dir / SHOTS
    if not shots_path.is_file():
        raise InputError(
            f"{results_dir} is not a results folder: it has no {SHOTS} "
            "(write one with 'qwen-client shots' or 'qwen-client analyze')"
        )
    records = _read_records(shots_path)
    if not records:
        raise InputError(f"{shots_path} holds no shots")
    manifest = _read_json(results_dir / MANIFEST)
    summary = _read_json(results_dir / SUMMARY)
    shots = tuple(_shot(rec, shots_path) for rec in records)
    vocabulary: dict[str, None] = {}
    for shot in shots:
        vocabulary.update(dict.fromkeys(shot.attributes))
    film = _film(manifest, summary, shots)
    return Results(results_dir.resolve(), film, shots, tuple(vocabulary), summary, manifest)


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of shots.jsonl, sorted by shot id (a torn last line is skipped)."""
    records: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            sid = int(rec["shot_id"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # a run killed mid-write: the last line only
                log.warning("%s: skipping the incomplete last line", path)
                continue
            raise InputError(f"{path}:{number}: not a shot record") from None
        records.setdefault(sid, rec)
    return [records[k] for k in sorted(records)]


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or unreadable (it is optional)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s is not valid JSON; ignoring it", path)
        return {}
    return data if isinstance(data, dict) else {}


def _shot(rec: Mapping[str, Any], path: Path) -> ShotRecord:
    """One typed record (InputError naming the shot when a timing field is missing)."""
    try:
        attrs = rec.get("attributes") or {}
        return ShotRecord(
            shot_id=int(rec["shot_id"]),
            start_frame=int(rec["start_frame"]),
            end_frame=int(rec["end_frame"]),
            start_time=float(rec["start_time"]),
            end_time=float(rec["end_time"]),
            caption=rec.get("caption"),
            attributes={str(k): float(v) for k, v in attrs.items() if v is not None},
            audio_class=rec.get("audio_class"),
            raw=rec,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: shot {rec.get('shot_id')!r} lacks {exc}") from None


def snap_rate(fps: float) -> Fraction:
    """The exact rate a float fps stands for: the closest standard rate when within 0.02 %
    (24.0 -> 24, 29.97 -> 30000/1001), else the nearest fraction with a denominator up to
    1001."""
    closest = min(STANDARD_RATES, key=lambda rate: abs(fps - float(rate)))
    if abs(fps - float(closest)) <= _SNAP_TOLERANCE * float(closest):
        return closest
    return Fraction(fps).limit_denominator(1001)


def parse_rate(value: object) -> Fraction | None:
    """``"num/den"``, an int or a float as an exact rate; None when it is not a positive rate."""
    try:
        if isinstance(value, str) and "/" in value:
            rate = Fraction(value)
        elif isinstance(value, int | float | str):
            rate = snap_rate(float(value))
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def _rate_from_records(shots: Sequence[ShotRecord]) -> Fraction | None:
    """The rate the records imply: frame / time of the latest shot start (the most precise)."""
    for shot in reversed(shots):
        if shot.start_time > 0 and shot.start_frame > 0:
            return snap_rate(shot.start_frame / shot.start_time)
    return None


def _film(
    manifest: Mapping[str, Any], summary: Mapping[str, Any], shots: Sequence[ShotRecord]
) -> Film:
    """The film from run.json["source"] (newer runs), summary.json["film"] and the records."""
    source = _mapping(manifest.get("source"))
    film_summary = _mapping(summary.get("film"))
    film_manifest = _mapping(manifest.get("film"))
    fps = (
        parse_rate(source.get("fps"))
        or parse_rate(source.get("fps_float"))
        or parse_rate(film_summary.get("fps"))
        or _rate_from_records(shots)
    )
    if fps is None:
        log.warning("the film's frame rate is unknown; assuming 25 fps")
        fps = Fraction(25)
    path = Path(source["path"]).expanduser() if source.get("path") else None
    name = str(
        film_manifest.get("name")
        or film_summary.get("name")
        or (path.name if path is not None else "film")
    )
    count = summary.get("frame_count")
    drop = source.get("drop_frame")
    return Film(
        name=name,
        path=path.resolve() if path is not None else None,
        fps=fps,
        width=_int(source.get("width")) or _int(film_summary.get("width")),
        height=_int(source.get("height")) or _int(film_summary.get("height")),
        frame_count=_int(count) or shots[-1].end_frame + 1,
        drop_frame=bool(drop) if drop is not None else None,
    )


def _mapping(value: object) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else {} (a field missing from older runs)."""
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    """A positive int, or None."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
