"""``client.export.formats``: one export by format name, the defaults ``analyze`` writes, the
default exports, and what a shot's marker carries."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from client.export import DEFAULT_NAMES, FORMATS, formats
from client.export.results import load_results
from client.export.timeline import ExportError
from tests.unit.test_export_results import record, write_folder

NTSC = Fraction(30000, 1001)


def analysed_folder(path: Path, fps: Fraction = NTSC) -> Path:
    recs = [
        record(
            1,
            0,
            29,
            fps,
            caption="A man waits.\nRain.",
            attributes={"suspense": 0.9, "darkness": 0.7, "motion": 0.1, "zeal": 0.8},
            audio_class="music",
            model_attributes={"suspense": 0.85},
        ),
        record(2, 30, 17999, fps, caption="Street", attributes={"suspense": 0.2}),
        record(3, 18000, 18010, fps, caption=None, attributes={}),
    ]
    manifest = {
        "film": {"name": "film.mp4"},
        "source": {"fps": f"{fps.numerator}/{fps.denominator}"},
    }
    return write_folder(path, recs, manifest, {"frame_count": 18011})


def test_every_format_has_a_default_file() -> None:
    assert set(DEFAULT_NAMES) == set(FORMATS)


def test_marker_texts_and_metadata(tmp_path: Path) -> None:
    results = load_results(analysed_folder(tmp_path / "r"))
    first, second, third = results.shots
    assert formats.marker_name(first) == "A man waits.\nRain."
    assert formats.editor_marker_name(first) == (
        "A man waits. Rain. | suspense 0.90, zeal 0.80, darkness 0.70"
    )
    assert formats.editor_marker_name(third) == "shot 3"
    meta = formats.shot_metadata(second, float(NTSC))
    # No SMPTE in the record: computed at the film's rate, drop-frame past the first minute.
    assert meta["start_smpte"] == "00:00:01;00" and meta["end_smpte"] == "00:10:00;18"
    assert meta["attributes"] == {"suspense": 0.2} and "audio_class" not in meta
    assert formats.shot_metadata(first, float(NTSC))["model_attributes"] == {"suspense": 0.85}


def test_write_default_exports_writes_the_timeline_and_the_report(tmp_path: Path) -> None:
    folder = analysed_folder(tmp_path / "r")
    written = formats.write_default_exports(folder)
    assert written == [folder.resolve() / "timeline.otio", folder.resolve() / "report.html"]
    assert (folder / "report.html").read_text().startswith("<!DOCTYPE html>")
    timeline = otio.adapters.read_from_file(str(folder / "timeline.otio"))
    assert len(timeline.find_clips()) == 3


def test_unknown_formats_and_mismatched_suffixes_are_export_errors(tmp_path: Path) -> None:
    folder = analysed_folder(tmp_path / "r")
    with pytest.raises(ExportError, match="unknown export format 'aaf'"):
        formats.export(folder, "aaf")
    with pytest.raises(ExportError, match=r"an edl export is written to a \.edl file"):
        formats.export(folder, "edl", tmp_path / "t.otio")
    assert not (tmp_path / "t.otio").exists()


def test_shot_timeline_covers_the_film_at_its_rate(tmp_path: Path) -> None:
    results = load_results(analysed_folder(tmp_path / "r", Fraction(24000, 1001)))
    timeline = formats.shot_timeline(results, editor_markers=True)
    clips = timeline.find_clips()
    assert [c.source_range.start_time.value for c in clips] == [0, 30, 18000]
    assert clips[-1].source_range.end_time_exclusive().value == 18011
    assert all(c.source_range.start_time.rate == 24000 / 1001 for c in clips)
    assert clips[0].media_reference.target_url == "film.mp4"  # no path recorded: the name
    assert clips[1].markers[0].name == "Street | suspense 0.20"
