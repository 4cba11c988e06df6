"""``qwen-client trailer`` as a user runs it: a generated film with known dark and bright shots,
analysed by ``qwen-client analyze`` against the fake server (whose ``darkness`` is one minus the
shots' mean luma), then cut by the real command into OTIO / EDL / FCP X XML read back with
OpenTimelineIO and its adapters, checked against the documented rules and cut.json; a cut
written into the results folder refreshes the report.html there."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import opentimelineio as otio
import pytest

from tests.e2e.test_cli_client import cli, one_line_error
from tests.fake_analysis_server import FakeAnalysisServer
from tests.film_factory import ShotSpec, make_film

TOKEN = "e2e-token"
# Eight 2 s shots at 25 fps; the dark ones (shots 2, 4, 6, 8) have distinct levels.
BRIGHTNESS = (0.8, 0.15, 0.7, 0.3, 0.9, 0.05, 0.6, 0.45)
PATTERNS = ("bars", "checker", "circles", "gradient", "noise", "bars", "checker", "circles")
AUDIO = ("tone", "noise", "silence", "tone", "noise", "silence", "tone", "noise")
NOIR = "noir:\n  scoring_weights: {darkness: 1.0}\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An analysed results folder of the eight-shot film."""
    root = tmp_path_factory.mktemp("trailer")
    specs = [
        ShotSpec(frames=50, brightness=b, pattern=p, audio=a, amplitude=0.4)
        for b, p, a in zip(BRIGHTNESS, PATTERNS, AUDIO, strict=True)
    ]
    truth = make_film(root / "film.mp4", specs)
    out = root / "results"
    with FakeAnalysisServer(token=TOKEN) as server:
        proc = cli("analyze", str(truth.path), "--server", server.url, "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    assert [r["start_frame"] for r in records] == [50 * i for i in range(8)]
    # The precondition of every expectation below: darkness ranks the dark shots 6, 2, 4, 8.
    by_darkness = sorted(records, key=lambda r: -r["attributes"]["darkness"])
    assert [r["shot_id"] for r in by_darkness[:4]] == [6, 2, 4, 8]
    yield out


@pytest.fixture
def noir(tmp_path: Path) -> Path:
    path = tmp_path / "noir.yaml"
    path.write_text(NOIR)
    return path


def records_of(results: Path) -> dict[int, dict]:
    lines = (results / "shots.jsonl").read_text().splitlines()
    return {r["shot_id"]: r for r in map(json.loads, lines)}


def test_cut_follows_the_documented_rules(results: Path, noir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut" / "cut.otio"
    proc = cli(
        "trailer", str(results), "--profile", str(noir), "--duration", "5", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 clips, 5.000 s (asked 5 s), profile noir" in proc.stdout
    cut = json.loads((out.parent / "cut.json").read_text())
    # 125 frames, 4 s clips: 2 buckets (shots 1-4, 5-8). Pass 1 takes 6 then 2; 4 and 8 find
    # their bucket taken, 7, 3, 1 and 5 are neighbours of a pick. 100 frames < 125: pass 2
    # takes 4, whose clip gives up 25 frames (the excess) down to the 1 s minimum.
    assert [c["shot_id"] for c in cut["clips"]] == [4, 2, 6]  # arc: rising score
    assert [c["act"] for c in cut["clips"]] == ["opening", "build", "peak"]
    assert [c["frames"] for c in cut["clips"]] == [25, 50, 50]
    assert cut["achieved"] == {"frames": 125, "seconds": 5.0, "difference_frames": 0, "clips": 3}
    assert cut["settings"]["buckets"] == 2 and cut["warnings"] == []
    status = {c["shot_id"]: (c["status"], c["reason"]) for c in cut["candidates"]}
    assert status[8] == ("rejected", "film-time bucket 2/2 holds shot 6 already")
    assert status[7] == ("rejected", "next to shot 6, picked already")
    assert "second pass" in status[4][1] and status[4][0] == "picked"
    scores = [c["score"] for c in cut["clips"]]
    assert scores == sorted(scores) and cut["arc"]["picks"][-1]["level"] == 1.0
    records = records_of(results)
    for clip in cut["clips"]:
        rec = records[clip["shot_id"]]
        assert clip["score"] == pytest.approx(rec["attributes"]["darkness"], abs=1e-6)
        assert clip["contributions"] == {"darkness": clip["score"]}
        assert rec["start_frame"] <= clip["source_in_frame"] <= clip["source_out_frame"]
        assert clip["source_out_frame"] <= rec["end_frame"]
    # Shot 4's clip is centred on its middle sampled frame.
    peak = records[4]["sample_frames"][2]
    assert cut["clips"][0]["peak_frame"] == peak
    assert cut["clips"][0]["source_in_frame"] == peak - 12
    # The timeline as an editor reads it: the same clips at the same source frames.
    timeline = otio.adapters.read_from_file(str(out))
    clips = list(timeline.find_clips())
    assert [
        (c.source_range.start_time.to_frames(), c.source_range.duration.to_frames()) for c in clips
    ] == [(c["source_in_frame"], c["frames"]) for c in cut["clips"]]
    assert timeline.duration().to_frames() == 125 and timeline.duration().rate == 25
    assert all(c.media_reference.target_url.endswith("film.mp4") for c in clips)


def test_same_input_gives_a_byte_identical_cut(results: Path, noir: Path, tmp_path: Path) -> None:
    texts = []
    for run in ("a", "b"):
        out = tmp_path / run / "trailer.edl"
        args = ("--profile", str(noir), "--duration", "6.5", "--max-clip", "2.5", "--out", str(out))
        proc = cli("trailer", str(results), *args)
        assert proc.returncode == 0, proc.stderr
        texts.append(((out.parent / "cut.json").read_bytes(), out.read_bytes()))
    assert texts[0] == texts[1]
    cut = json.loads(texts[0][0])
    assert cut["achieved"]["frames"] == round(6.5 * 25) == 162  # within one frame of 6.5 s
    edl = otio.adapters.read_from_file(str(tmp_path / "a" / "trailer.edl"), rate=25)
    events = list(edl.find_clips())
    assert [e.source_range.start_time.to_frames() for e in events] == [
        c["source_in_frame"] for c in cut["clips"]
    ]
    assert sum(e.source_range.duration.to_frames() for e in events) == 162


def test_fcpxml_and_the_shipped_thriller_profile(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.fcpxml"
    proc = cli(
        "trailer", str(results), "--profile", "thriller", "--duration", "4", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert " lack " not in proc.stderr  # the six default attributes hold all its weights
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["profile"]["missing_attributes"] == []
    assert cut["achieved"]["frames"] == 100
    timeline = otio.adapters.read_from_file(str(out))
    assert sum(c.source_range.duration.to_frames() for c in timeline.find_clips()) == 100


def test_missing_attributes_warn_and_none_is_an_error(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "drama.otio"
    proc = cli("trailer", str(results), "--profile", "drama", "--duration", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "lack emotional_intensity, intimacy, warmth (60% of the profile's weight)" in (
        proc.stderr
    )
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["profile"]["missing_share"] == 0.6
    assert cut["profile"]["weights_used"] == {"emotional_tension": 0.75, "darkness": 0.25}
    assert "the results lack emotional_intensity" in cut["warnings"][0]
    comedy = cli(
        "trailer", str(results), "--profile", "comedy", "--duration", "4", "--out", str(out)
    )
    assert comedy.returncode == 2
    line = one_line_error(comedy)
    assert "none of its attributes (humor, lightheartedness, timing, absurdity)" in line


def test_a_film_too_short_for_the_duration_uses_what_exists(results: Path, noir: Path) -> None:
    out = results.parent / "long" / "cut.otio"
    proc = cli(
        "trailer", str(results), "--profile", str(noir), "--duration", "60", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    cut = json.loads((out.parent / "cut.json").read_text())
    # No two neighbours: at most every other shot, four 2 s clips (the darker set 2, 4, 6, 8).
    assert sorted(c["shot_id"] for c in cut["clips"]) == [2, 4, 6, 8]
    assert cut["achieved"]["frames"] == 200
    assert "fill only 8.000 s of the 60.000 s" in proc.stderr
    assert any("fill only" in w for w in cut["warnings"])


def test_a_cut_in_the_results_folder_refreshes_its_report(
    results: Path, noir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "results"
    shutil.copytree(results, folder)
    report = folder / "report.html"
    before = report.read_text(encoding="utf-8")  # analyze wrote it, before any cut
    shows_cut = '"cut":{"profile":"noir"'  # the page's data block, once it holds the cut
    assert shows_cut not in before
    args = ("--profile", str(noir), "--duration", "5")
    # The cut elsewhere: the report is left as it is, quietly.
    proc = cli("trailer", str(folder), *args, "--out", str(tmp_path / "else" / "cut.otio"))
    assert proc.returncode == 0, proc.stderr
    assert report.read_text(encoding="utf-8") == before and "report" not in proc.stderr
    # The cut in the results folder: the report now holds it.
    proc = cli("trailer", str(folder), *args, "--out", str(folder / "cut.otio"))
    assert proc.returncode == 0, proc.stderr
    assert shows_cut in report.read_text(encoding="utf-8")
    # No report there: none is made.
    report.unlink()
    proc = cli("trailer", str(folder), *args, "--out", str(folder / "cut.otio"))
    assert proc.returncode == 0, proc.stderr
    assert not report.exists() and "report" not in proc.stderr
    # A report that cannot be rewritten (a directory in its place): a warning, the cut written.
    report.mkdir()
    (folder / "cut.json").unlink()
    proc = cli("trailer", str(folder), *args, "--out", str(folder / "cut.otio"))
    assert proc.returncode == 0, proc.stderr
    assert "could not be refreshed" in proc.stderr and "--format html" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((folder / "cut.json").read_text())["achieved"]["frames"] == 125


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--duration", "-3"), "--duration: must be a number of seconds > 0"),
        (("--duration", "abc"), "--duration: not a number of seconds: 'abc'"),
        (("--duration", "5", "--out", "cut.mov"), "must end with .otio, .edl, .fcpxml"),
        (("--duration", "5", "--min-clip", "3", "--max-clip", "2"), "--min-clip (3 s) is longer"),
        (("--duration", "0.5"), "--duration (0.5 s) is shorter than --min-clip"),
        (("--duration", "5", "--profile", "horror"), "no such shipped profile"),
        (("--duration", "5", "--profile", "nope.yaml"), "nope.yaml cannot be read"),
    ],
)
def test_bad_flags_are_usage_errors(
    results: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    base = {"--profile": "thriller", "--out": str(tmp_path / "cut.otio")}
    given = dict(zip(args[::2], args[1::2], strict=True))
    merged = [x for k, v in {**base, **given}.items() for x in (k, v)]
    proc = cli("trailer", str(results), *merged, token=None)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cut.json").exists()


def test_not_a_results_folder_or_no_scores(results: Path, tmp_path: Path) -> None:
    common = ("--profile", "thriller", "--duration", "4", "--out", str(tmp_path / "c.otio"))
    missing = cli("trailer", str(tmp_path / "nowhere"), *common, token=None)
    assert missing.returncode == 2 and "not a results folder" in one_line_error(missing)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(results / "run.json", bare / "run.json")
    lines = [json.loads(line) for line in (results / "shots.jsonl").read_text().splitlines()]
    for rec in lines:
        rec.pop("attributes"), rec.pop("caption")
    (bare / "shots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    unscored = cli("trailer", str(bare), *common, token=None)
    assert unscored.returncode == 2
    assert "holds no scores" in one_line_error(unscored)
