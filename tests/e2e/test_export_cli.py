"""``qwen-client export`` as a user runs it: results folders made by the real CLI (``analyze``
against the fake analysis server on loopback, ``shots`` without one) from films generated at
24, 25 and 29.97 fps, exported by a real subprocess and read back with OpenTimelineIO's own
adapters (and the FCP X XML with an XML parser where the adapter's reader rounds 29.97 to 29),
then checked against shots.jsonl: shot count, in/out frames, markers and their metadata."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from tests.cli_runner import run_cli
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import FilmTruth, ShotSpec, make_film

REPO = Path(__file__).resolve().parents[2]
TOKEN = "export-token"
NTSC = Fraction(30000, 1001)
RATES = {"24": Fraction(24), "25": Fraction(25), "29.97": NTSC}
TRAILER_VOCABULARY = REPO / "examples" / "trailer_attributes.yaml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, token=TOKEN)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    return lines[0]


def make_test_film(path: Path, fps: Fraction) -> FilmTruth:
    shots = [
        ShotSpec(frames=30, brightness=0.8, pattern="bars", audio="tone"),
        ShotSpec(frames=40, brightness=0.1, pattern="checker", audio="noise"),
        ShotSpec(frames=36, brightness=0.5, pattern="circles", audio="silence"),
    ]
    return make_film(path, shots, fps=fps, size=(256, 144))


def records(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "shots.jsonl").read_text().splitlines()]


def top3(rec: dict) -> str:
    ranked = sorted(rec["attributes"].items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{name} {value:.2f}" for name, value in ranked)


@pytest.fixture(scope="module", params=list(RATES), ids=[f"{r}fps" for r in RATES])
def analysed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(film, results folder, fps) of an ``analyze`` run at one rate."""
    fps = RATES[request.param]
    root = tmp_path_factory.mktemp(f"export{request.param}")
    film = make_test_film(root / "film.mp4", fps)
    out = root / "results"
    with FakeAnalysisServer(token=TOKEN) as server:
        proc = cli("analyze", str(film.path), "--server", server.url, "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(records(out)) == len(film.shots)
    return film, out, fps


def frame(rt: otio.opentime.RationalTime, fps: Fraction) -> int:
    return round(rt.value * float(fps) / rt.rate)


def test_otio_has_a_clip_and_a_marker_per_shot(analysed) -> None:
    film, results, fps = analysed
    proc = cli("export", str(results), "--format", "otio")
    assert proc.returncode == 0, proc.stderr
    out = results / "timeline.otio"
    assert str(out) in proc.stdout
    timeline = otio.adapters.read_from_file(str(out))
    clips = timeline.find_clips()
    recs = records(results)
    assert len(clips) == len(recs)
    for clip, rec in zip(clips, recs, strict=True):
        rng = clip.source_range
        assert rng.start_time.rate == float(fps)
        assert (rng.start_time.value, rng.end_time_exclusive().value) == (
            rec["start_frame"],
            rec["end_frame"] + 1,
        )
        ref = clip.media_reference
        assert (out.parent / ref.target_url).resolve() == film.path.resolve()
        assert not Path(ref.target_url).is_absolute()
        assert ref.available_range.duration.value == film.frame_count
        (marker,) = clip.markers
        assert marker.name == rec["caption"]
        meta = marker.metadata["qwen"]
        assert meta["shot_id"] == rec["shot_id"] and meta["audio_class"] == rec["audio_class"]
        assert dict(meta["attributes"]) == rec["attributes"]
        assert meta["start_smpte"] == rec["start_smpte"] and meta["end_smpte"] == rec["end_smpte"]
        assert meta["start_timecode"] == rec["start_timecode"]
        ranked = sorted(rec["attributes"].items(), key=lambda kv: -kv[1])[:3]
        assert [(t["name"], t["score"]) for t in meta["top_attributes"]] == ranked
        assert frame(marker.marked_range.start_time, fps) == rec["start_frame"]


def test_edl_has_an_event_and_a_locator_per_shot(analysed, tmp_path: Path) -> None:
    _, results, fps = analysed
    out = tmp_path / "cut" / "film.edl"
    proc = cli("export", str(results), "--format", "edl", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    drop = fps == NTSC
    assert ("FCM: DROP FRAME" if drop else "FCM: NON-DROP FRAME") in text.splitlines()[:3]
    timeline = otio.adapters.read_from_file(str(out), rate=float(fps))
    recs = records(results)
    clips = timeline.find_clips()
    assert [
        (frame(c.source_range.start_time, fps), frame(c.source_range.end_time_exclusive(), fps))
        for c in clips
    ] == [(r["start_frame"], r["end_frame"] + 1) for r in recs]
    locators = re.findall(r"^\* LOC: (\S+) +(\w+) +(.*)$", text, re.M)
    assert [name for *_, name in locators] == [f"{r['caption']} | {top3(r)}".upper() for r in recs]
    assert [tc for tc, *_ in locators] == [r["start_smpte"] for r in recs]
    event_in = re.findall(r"^\d{3}\s+\S+\s+V\s+C\s+(\S+) (\S+)", text, re.M)
    assert event_in == [(r["start_smpte"], r["end_smpte"]) for r in recs]


def test_fcpxml_has_a_clip_and_a_marker_per_shot(analysed) -> None:
    film, results, fps = analysed
    proc = cli("export", str(results), "--format", "fcpxml")
    assert proc.returncode == 0, proc.stderr
    out = results / "timeline.fcpxml"
    timeline = otio.adapters.read_from_file(str(out))
    recs = records(results)
    clips = timeline.find_clips()
    assert len(clips) == len(recs)
    assert [m.name for c in clips for m in c.markers] == [
        f"{r['caption']} | {top3(r)}" for r in recs
    ]
    root = ET.parse(out).getroot()
    assert {a.get("src") for a in root.iter("asset")} == {film.path.resolve().as_uri()}

    def seconds(value: str | None) -> Fraction:
        return Fraction(0) if value in (None, "0s") else Fraction(value.rstrip("s"))

    spans = [
        (
            seconds(c.get("start")) * fps,
            (seconds(c.get("start")) + seconds(c.get("duration"))) * fps,
        )
        for c in root.iter("clip")
    ]
    assert spans == [(r["start_frame"], r["end_frame"] + 1) for r in recs]


def test_csv_rewrites_shots_csv_with_every_attribute(analysed, tmp_path: Path) -> None:
    _, results, _ = analysed
    out = tmp_path / "shots.csv"
    proc = cli("export", str(results), "--format", "csv", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (results / "shots.csv").read_bytes()
    rows = list(csv.DictReader(out.open()))
    recs = records(results)
    assert [int(r["shot_id"]) for r in rows] == [r["shot_id"] for r in recs]
    assert all(
        float(row["suspense"]) == rec["attributes"]["suspense"]
        for row, rec in zip(rows, recs, strict=True)
    )


def test_a_38_attribute_vocabulary_lands_in_the_markers(tmp_path: Path) -> None:
    film = make_test_film(tmp_path / "film.mp4", Fraction(25))
    out = tmp_path / "results"
    with FakeAnalysisServer(token=TOKEN) as server:
        proc = cli(
            "analyze",
            str(film.path),
            "--server",
            server.url,
            "--out",
            str(out),
            "--attributes",
            str(TRAILER_VOCABULARY),
            "-q",
        )
    assert proc.returncode == 0, proc.stderr
    assert cli("export", str(out)).returncode == 0  # otio is the default format
    clips = otio.adapters.read_from_file(str(out / "timeline.otio")).find_clips()
    recs = records(out)
    assert len(recs[0]["attributes"]) == 38
    for clip, rec in zip(clips, recs, strict=True):
        assert dict(clip.markers[0].metadata["qwen"]["attributes"]) == rec["attributes"]


def test_a_shots_run_exports_markers_named_after_the_shots(tmp_path: Path) -> None:
    film = make_test_film(tmp_path / "film.mp4", Fraction(24))
    out = tmp_path / "shots"
    proc = cli("shots", str(film.path), "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    for fmt in ("otio", "edl", "fcpxml"):
        done = cli("export", str(out), "--format", fmt)
        assert done.returncode == 0, done.stderr
    clips = otio.adapters.read_from_file(str(out / "timeline.otio")).find_clips()
    assert [c.markers[0].name for c in clips] == [f"shot {r['shot_id']}" for r in records(out)]
    assert "* LOC: 00:00:00:00 BLUE    SHOT 1" in (out / "timeline.edl").read_text()


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda p: None, (), "no such directory"),
        (lambda p: p.mkdir(), (), "has no shots.jsonl"),
        (lambda p: (p.mkdir(), (p / "shots.jsonl").write_text("x\ny\n")), (), "not a shot record"),
        (lambda p: p.mkdir(), ("--format", "avid"), "invalid choice: 'avid'"),
        (
            lambda p: (
                p.mkdir(),
                (p / "shots.jsonl").write_text(
                    '{"shot_id":1,"start_frame":0,"end_frame":9,"start_time":0,"end_time":0.4}\n'
                ),
            ),
            ("--out", "x.mov"),
            "an otio export is written to a .otio file, not x.mov",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, setup, args: tuple[str, ...], message: str
) -> None:
    folder = tmp_path / "r"
    setup(folder)
    proc = cli("export", str(folder), *args)
    assert proc.returncode == 2
    assert message in one_line_error(proc)


def test_html_goes_through_the_report_module(analysed, tmp_path: Path) -> None:
    pytest.importorskip("client.export.report")
    _, results, _ = analysed
    out = tmp_path / "report.html"
    proc = cli("export", str(results), "--format", "html", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.lstrip().lower().startswith("<!doctype html")
    assert all(r["caption"] in text for r in records(results))
