"""An OpenTimelineIO timeline of clips cut from one film, and writing it in an editor's format.

``build_timeline(clips, media_path=..., fps=..., name=...)`` makes one video track holding one
clip per ``ClipSpec`` (source in/out frames of the film, at the film's exact rate: a
``RationalTime`` rate of 30000/1001 is 29.97002997...), each referencing the film through an
``ExternalReference`` and carrying at most one marker at its first frame (name + metadata).
The shot export lays out every shot of the film in order; the trailer cut lays out a chosen
few in its own order; both use these two functions.

``write_timeline(timeline, out)`` picks OTIO's adapter from the file name: ``.otio`` (OTIO
JSON; the media path is made relative to the file's folder when it can be, so a results folder
moved along with its film still links), ``.edl`` (CMX 3600 through ``otio-cmx3600-adapter``;
the adapter writes no FCM line, so one is added: ``DROP FRAME`` at 29.97/59.94, whose
timecodes the adapter already writes with ';', else ``NON-DROP FRAME``) and ``.fcpxml`` (FCP
X XML through ``otio-fcpx-xml-adapter``; the media is a ``file://`` URL as Final Cut and
Resolve expect). A timeline that an adapter refuses is an ``ExportError`` (exit code 2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio

from client.errors import EXIT_USAGE, ClientError

log = logging.getLogger("client.export")

FORMATS_BY_SUFFIX: dict[str, str] = {
    ".otio": "otio_json",
    ".edl": "cmx_3600",
    ".fcpxml": "fcpx_xml",
}
DROP_FRAME_RATES: tuple[Fraction, ...] = (Fraction(30000, 1001), Fraction(60000, 1001))


class ExportError(ClientError):
    """An export cannot be written (unknown format, a timeline the format cannot carry, an
    unwritable file)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ClipSpec:
    """One clip: frames ``source_in`` (first, inclusive) to ``source_out`` (exclusive, like an
    EDL's out point) of the film; ``marker_name`` (None: no marker) marks its first frame with
    ``marker_metadata`` and ``marker_color`` (an ``otio.schema.MarkerColor`` name);
    ``metadata`` goes on the clip itself."""

    source_in: int
    source_out: int
    name: str
    marker_name: str | None = None
    marker_metadata: Mapping[str, Any] = field(default_factory=dict)
    marker_color: str = otio.schema.MarkerColor.BLUE
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source_in < 0 or self.source_out <= self.source_in:
            raise ValueError(
                f"clip {self.name!r}: source frames {self.source_in}..{self.source_out} "
                "are not a range (in >= 0, out > in)"
            )


def otio_rate(fps: Fraction) -> float:
    """The OTIO rate of an exact frame rate (OTIO rates are doubles: 30000/1001 -> 29.97...)."""
    return float(fps)


def build_timeline(
    clips: Sequence[ClipSpec],
    *,
    media_path: Path | str | None,
    fps: Fraction,
    name: str,
    media_name: str | None = None,
    media_frames: int | None = None,
) -> otio.schema.Timeline:
    """A timeline of ``clips`` on one video track, all cut from the film at ``media_path``
    (absolute path, or a bare name when unknown). ``media_frames`` (the film's length) gives
    the reference's available range; ``media_name`` its name (default: the file name)."""
    if fps <= 0:
        raise ValueError(f"frame rate must be > 0, not {fps}")
    rate = otio_rate(fps)
    url = str(media_path) if media_path is not None else (media_name or name)
    available = (
        otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(media_frames, rate)
        )
        if media_frames
        else None
    )
    timeline = otio.schema.Timeline(name=name)
    timeline.global_start_time = otio.opentime.RationalTime(0, rate)
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    for spec in clips:
        reference = otio.schema.ExternalReference(target_url=url, available_range=available)
        reference.name = media_name or Path(url).name
        clip = otio.schema.Clip(
            name=spec.name,
            media_reference=reference,
            source_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(spec.source_in, rate),
                otio.opentime.RationalTime(spec.source_out - spec.source_in, rate),
            ),
        )
        clip.metadata.update(dict(spec.metadata))
        if spec.marker_name is not None:
            marker = otio.schema.Marker(
                name=spec.marker_name,
                marked_range=otio.opentime.TimeRange(
                    otio.opentime.RationalTime(spec.source_in, rate),
                    otio.opentime.RationalTime(1, rate),
                ),
                color=spec.marker_color,
            )
            marker.metadata.update(dict(spec.marker_metadata))
            clip.markers.append(marker)
        track.append(clip)
    return timeline


def adapter_for(out: Path) -> str:
    """The OTIO adapter name for a file name's suffix (ExportError for any other)."""
    adapter = FORMATS_BY_SUFFIX.get(out.suffix.lower())
    if adapter is None:
        known = ", ".join(FORMATS_BY_SUFFIX)
        raise ExportError(f"{out}: cannot tell the timeline format from {out.suffix!r} ({known})")
    return adapter


def write_timeline(timeline: otio.schema.Timeline, out: Path) -> Path:
    """Write ``timeline`` to ``out`` in the format of its suffix (see module doc); returns
    ``out``. The timeline passed in is not changed."""
    out = Path(out)
    adapter = adapter_for(out)
    copy = timeline.deepcopy()
    _localise_media(copy, out, adapter)
    try:
        if adapter != "otio_json":
            _one_line_markers(copy)
        text = otio.adapters.write_to_string(copy, adapter_name=adapter)
        if adapter == "cmx_3600":
            text = _with_fcm(text, _timeline_rate(copy))
        elif adapter == "fcpx_xml":
            text = _with_frame_duration(text, _timeline_rate(copy))
    except otio.exceptions.OTIOError as exc:
        raise ExportError(
            f"{out.name}: the {adapter} adapter refused the timeline: {exc}"
        ) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc}") from None
    log.info("wrote %s (%s)", out, adapter)
    return out


def _timeline_rate(timeline: otio.schema.Timeline) -> float:
    """The rate of the timeline's first clip (every clip of ``build_timeline`` shares it)."""
    for clip in timeline.find_clips():
        return clip.source_range.start_time.rate
    return timeline.tracks.duration().rate


def is_drop_frame_rate(rate: float) -> bool:
    """Whether timecode at ``rate`` is written drop-frame (29.97 and 59.94)."""
    return any(abs(rate - float(r)) < 1e-6 for r in DROP_FRAME_RATES)


def _with_fcm(text: str, rate: float) -> str:
    """The EDL with its FCM line after TITLE (the adapter writes drop-frame timecodes at
    29.97 without saying so; editors read FCM to know)."""
    fcm = "FCM: DROP FRAME" if is_drop_frame_rate(rate) else "FCM: NON-DROP FRAME"
    lines = text.splitlines()
    at = 1 if lines and lines[0].startswith("TITLE:") else 0
    if not any(line.startswith("FCM") for line in lines):
        lines.insert(at, fcm)
    return "\n".join(lines) + "\n"


def _one_line_markers(timeline: otio.schema.Timeline) -> None:
    """Marker names on one line: an EDL comment ends at the line's end."""
    for clip in timeline.find_clips():
        for marker in clip.markers:
            marker.name = " ".join((marker.name or "").split())


def frame_duration(rate: float) -> Fraction:
    """One frame's exact duration at an OTIO rate (29.97002997 -> 1001/30000)."""
    for exact in DROP_FRAME_RATES + (Fraction(24000, 1001),):
        if abs(rate - float(exact)) < 1e-6:
            return 1 / exact
    return 1 / Fraction(rate).limit_denominator(1001)


def _with_frame_duration(text: str, rate: float) -> str:
    """The FCP X XML with every format's frameDuration set. The adapter looks rates up in a
    table keyed 23.98/29.97/...: the exact NTSC rates (and any other) miss it and it writes
    ``frameDuration=""``, which its own reader and Final Cut refuse."""
    duration = frame_duration(rate)
    value = f"{duration.numerator}/{duration.denominator}s"
    return re.sub(r'frameDuration=""', f'frameDuration="{value}"', text)


def _used_range(clips: Sequence[otio.schema.Clip]) -> otio.opentime.TimeRange:
    """From frame 0 to the last frame any clip uses (a film of unknown length)."""
    end = max(c.source_range.end_time_exclusive() for c in clips)
    return otio.opentime.TimeRange(otio.opentime.RationalTime(0, end.rate), end)


def _localise_media(timeline: otio.schema.Timeline, out: Path, adapter: str) -> None:
    """Make absolute film paths what the format expects: relative to ``out``'s folder for OTIO
    (when the two share a root), a file:// URL for FCP X XML, the absolute path for EDL; give
    FCP X XML assets of unknown length the range the clips use."""
    clips = list(timeline.find_clips())
    for clip in clips:
        ref = clip.media_reference
        if not isinstance(ref, otio.schema.ExternalReference) or not ref.target_url:
            continue
        if adapter == "fcpx_xml" and ref.available_range is None:
            ref.available_range = _used_range(clips)  # the adapter needs the asset's length
        path = Path(ref.target_url)
        if not path.is_absolute():
            continue
        if adapter == "otio_json":
            with contextlib.suppress(ValueError):  # another drive (Windows): stays absolute
                ref.target_url = os.path.relpath(path, out.parent.resolve())
        elif adapter == "fcpx_xml":
            ref.target_url = path.as_uri()
