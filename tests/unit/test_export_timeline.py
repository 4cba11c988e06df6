"""``client.export.timeline``: clips cut from one film at its exact rate, written through
OpenTimelineIO's adapters and read back with the same adapters (and, where an adapter's reader
loses precision, with the file format's own parser)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from client.errors import EXIT_USAGE
from client.export.timeline import (
    ClipSpec,
    ExportError,
    build_timeline,
    frame_duration,
    is_drop_frame_rate,
    write_timeline,
)

NTSC = Fraction(30000, 1001)
RATES = [Fraction(24), Fraction(25), NTSC]
# Cuts past 10 minutes at 29.97, where drop-frame and non-drop timecodes differ.
RANGES = [(0, 30), (30, 95), (95, 20000), (20000, 20040)]


def clips() -> list[ClipSpec]:
    return [
        ClipSpec(
            source_in=a,
            source_out=b,
            name=f"shot {i}",
            marker_name=f"caption {i}\nsecond line",
            marker_metadata={"qwen": {"shot_id": i, "attributes": {"suspense": i / 10}}},
            metadata={"qwen": {"shot_id": i}},
        )
        for i, (a, b) in enumerate(RANGES, 1)
    ]


def timeline(fps: Fraction, media: Path) -> otio.schema.Timeline:
    return build_timeline(clips(), media_path=media, fps=fps, name="film", media_frames=20040)


def frames(rt: otio.opentime.RationalTime, fps: Fraction) -> int:
    return round(rt.value * float(fps) / rt.rate)


@pytest.mark.parametrize("fps", RATES, ids=str)
def test_otio_keeps_frames_rate_markers_and_a_relative_media_path(
    tmp_path: Path, fps: Fraction
) -> None:
    media = tmp_path / "films" / "film.mp4"
    out = write_timeline(timeline(fps, media), tmp_path / "results" / "timeline.otio")
    back = otio.adapters.read_from_file(str(out))
    got = list(back.find_clips())
    assert len(got) == len(RANGES)
    for clip, (a, b), spec in zip(got, RANGES, clips(), strict=True):
        assert clip.source_range.start_time.rate == float(fps)
        assert clip.source_range.start_time.value == a
        assert clip.source_range.end_time_exclusive().value == b
        assert clip.media_reference.target_url == "../films/film.mp4"
        assert clip.media_reference.available_range.duration.value == 20040
        (marker,) = clip.markers
        assert marker.name == spec.marker_name  # OTIO keeps the text as it is
        assert marker.marked_range.start_time.value == a
        assert dict(marker.metadata["qwen"]) == spec.marker_metadata["qwen"]
        assert dict(clip.metadata["qwen"]) == spec.metadata["qwen"]


@pytest.mark.parametrize("fps", RATES, ids=str)
def test_edl_events_and_locators_read_back(tmp_path: Path, fps: Fraction) -> None:
    media = tmp_path / "film.mp4"
    out = write_timeline(timeline(fps, media), tmp_path / "timeline.edl")
    text = out.read_text()
    drop = fps == NTSC
    assert text.splitlines()[1] == ("FCM: DROP FRAME" if drop else "FCM: NON-DROP FRAME")
    back = otio.adapters.read_from_file(str(out), rate=float(fps))
    got = list(back.find_clips())
    assert [
        (frames(c.source_range.start_time, fps), frames(c.source_range.end_time_exclusive(), fps))
        for c in got
    ] == RANGES
    assert all(c.media_reference.target_url == str(media) for c in got)
    # One '* LOC:' locator per clip on its first frame, on one line, upper-cased by the adapter.
    locators = re.findall(r"^\* LOC: (\S+) (\w+)\s+(.*)$", text, re.M)
    assert [name for *_, name in locators] == [f"CAPTION {i} SECOND LINE" for i in range(1, 5)]
    assert [color for _, color, _ in locators] == ["BLUE"] * 4
    rate = float(fps)
    assert [frames(otio.opentime.from_timecode(tc, rate), fps) for tc, *_ in locators] == [
        a for a, _ in RANGES
    ]
    assert all((";" in tc) == drop for tc, *_ in locators)
    if not drop:  # the adapter's reader parses non-drop locators (not ';' ones) into markers
        assert [m.name for c in got for m in c.markers] == [n for *_, n in locators]


@pytest.mark.parametrize("fps", RATES, ids=str)
def test_fcpxml_reads_back_with_exact_times(tmp_path: Path, fps: Fraction) -> None:
    media = tmp_path / "my film.mp4"
    out = write_timeline(timeline(fps, media), tmp_path / "timeline.fcpxml")
    back = otio.adapters.read_from_file(str(out))
    got = list(back.find_clips())
    assert len(got) == len(RANGES)
    assert [m.name for c in got for m in c.markers] == [
        f"caption {i} second line" for i in range(1, 5)
    ]
    if fps != NTSC:  # the adapter's reader counts 29.97 as 29 frames a second: check the XML
        assert [
            (c.source_range.start_time.value, c.source_range.end_time_exclusive().value)
            for c in got
        ] == RANGES
    root = ET.parse(out).getroot()
    (fmt,) = root.iter("format")
    assert Fraction(fmt.get("frameDuration", "").rstrip("s")) == 1 / fps
    assert {a.get("src") for a in root.iter("asset")} == {media.as_uri()}
    spine = [c for c in root.iter("clip")]

    def seconds(value: str | None) -> Fraction:
        return Fraction(0) if value in (None, "0s") else Fraction(value.rstrip("s"))

    assert [
        (
            seconds(c.get("start")) * fps,
            (seconds(c.get("start")) + seconds(c.get("duration"))) * fps,
        )
        for c in spine
    ] == [(Fraction(a), Fraction(b)) for a, b in RANGES]


def test_writing_leaves_the_timeline_unchanged_and_a_bare_name_stays(tmp_path: Path) -> None:
    tl = build_timeline(
        clips()[:1], media_path=None, fps=Fraction(25), name="film", media_name="film.mp4"
    )
    write_timeline(tl, tmp_path / "t.fcpxml")
    write_timeline(tl, tmp_path / "t.otio")
    (clip,) = tl.find_clips()
    assert clip.markers[0].name == "caption 1\nsecond line"
    assert clip.media_reference.target_url == "film.mp4"
    back = otio.adapters.read_from_file(str(tmp_path / "t.otio"))
    assert back.find_clips()[0].media_reference.target_url == "film.mp4"
    assert clip.media_reference.available_range is None


def test_an_unknown_suffix_is_an_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"cannot tell the timeline format from '\.txt'") as e:
        write_timeline(timeline(Fraction(25), tmp_path / "f.mp4"), tmp_path / "t.txt")
    assert e.value.exit_code == EXIT_USAGE and not (tmp_path / "t.txt").exists()


@pytest.mark.parametrize(("a", "b"), [(-1, 5), (5, 5), (9, 3)])
def test_a_clip_needs_a_frame_range(a: int, b: int) -> None:
    with pytest.raises(ValueError, match="are not a range"):
        ClipSpec(source_in=a, source_out=b, name="x")


def test_rates_helpers() -> None:
    assert is_drop_frame_rate(float(NTSC)) and is_drop_frame_rate(60000 / 1001)
    assert not is_drop_frame_rate(24000 / 1001) and not is_drop_frame_rate(30.0)
    assert frame_duration(float(NTSC)) == Fraction(1001, 30000)
    assert frame_duration(24000 / 1001) == Fraction(1001, 24000)
    assert frame_duration(25.0) == Fraction(1, 25)
