"""The trailer command on results folders written by hand (chosen scores, any vocabulary, a
29.97 fps film): picks of a pipeline profile, drop-frame timecodes, --allow-adjacent, cut.json's
explanation of every pick, and the timeline read back with OpenTimelineIO's adapters."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from client.cli.main import run
from client.trailer.cut import timecode

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FILE = REPO / "examples" / "trailer_attributes.yaml"
NTSC = Fraction(30000, 1001)
# humor of ten 3 s shots (90 frames each at 29.97): the funny ones are 3, 4 (neighbours), 8.
HUMOR = (0.1, 0.2, 0.9, 0.85, 0.1, 0.3, 0.2, 0.8, 0.4, 0.1)


def write_results(folder: Path, humor: tuple[float, ...] = HUMOR, frames: int = 90) -> Path:
    """A results folder with scores over the comedy attributes and a 29.97 fps film."""
    folder.mkdir(parents=True)
    lines = []
    for i, h in enumerate(humor):
        start, end = i * frames, (i + 1) * frames - 1
        step = frames // 6
        lines.append(
            {
                "shot_id": i + 1,
                "start_frame": start,
                "end_frame": end,
                "frame_count": frames,
                "start_time": float(start / NTSC),
                "end_time": float((end + 1) / NTSC),
                "duration": float(frames / NTSC),
                "sample_frames": [start + step * k for k in range(1, 6)],
                "caption": f"shot {i + 1}",
                "attributes": {"humor": h, "lightheartedness": h / 2, "timing": 0.5},
            }
        )
    (folder / "shots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"film": {"name": "comedy.mov", "fps": 29.97, "width": 640, "height": 360}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_drop_frame_timecodes() -> None:
    assert timecode(0, NTSC) == "00:00:00;00"
    assert timecode(1800, NTSC) == "00:01:00;02"  # frames 0 and 1 of minute 1 are skipped
    assert timecode(1799, Fraction(25)) == "00:01:11:24"


def test_pipeline_comedy_profile_on_a_ntsc_film(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = write_results(tmp_path / "results")
    out = tmp_path / "cut.edl"
    profile = f"{PIPELINE_FILE}:comedy"
    code = run(
        ["trailer", str(results), "--profile", profile, "--duration", "10", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "lack absurdity (15% of the profile's weight)" in captured.err
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["film"]["fps"] == "30000/1001" and cut["film"]["path"] is None
    assert any("do not record where comedy.mov is" in w for w in cut["warnings"])
    assert cut["target"]["frames"] == cut["achieved"]["frames"] == 300  # 10 s = 299.7 frames
    weights = cut["profile"]["weights_used"]
    assert weights == pytest.approx(
        {"humor": 0.4 / 0.85, "lightheartedness": 0.25 / 0.85, "timing": 0.2 / 0.85}, abs=1e-6
    )
    # 119-frame clips: 3 buckets of 300 frames (shots 1-3 | 4-6 | 7-10). Pass 1: 3, 8, 6 (4, 9,
    # 2, 7 and 5 are neighbours of a pick, 1 and 10 find their bucket taken): 270 frames.
    # Pass 2 takes 1 and trims it to the 30 frames still missing.
    ranked = [(c["shot_id"], c["status"]) for c in cut["candidates"]]
    assert ranked[:4] == [(3, "picked"), (4, "rejected"), (8, "picked"), (9, "rejected")]
    assert [c["shot_id"] for c in cut["clips"]] == [1, 6, 8, 3]  # opening, build, peak x2
    assert [c["frames"] for c in cut["clips"]] == [30, 90, 90, 90]
    assert [c["act"] for c in cut["clips"]] == ["opening", "build", "peak", "peak"]
    for clip in cut["clips"]:
        assert ";" in clip["source_in_timecode"] and ";" in clip["record_out_timecode"]
        parts = clip["contributions"]
        assert sum(parts.values()) == pytest.approx(clip["score"], abs=1e-5)
    assert cut["clips"][0]["record_in_timecode"] == "00:00:00;00"
    edl = out.read_text()
    assert "FCM: DROP FRAME" in edl
    timeline = otio.adapters.read_from_file(str(out), rate=float(NTSC))
    assert sum(c.source_range.duration.to_frames() for c in timeline.find_clips()) == 300


def test_allow_adjacent_lets_neighbours_in(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = write_results(tmp_path / "results", humor=(0.1, 0.2, 0.9, 0.95, 0.1, 0.1))
    profile = tmp_path / "funny.yaml"
    profile.write_text("funny: {humor: 1}\n")
    common = ["trailer", str(results), "--profile", str(profile), "--duration", "6"]
    assert run([*common, "--out", str(tmp_path / "a" / "cut.otio")]) == 0
    assert run([*common, "--allow-adjacent", "--out", str(tmp_path / "b" / "cut.otio")]) == 0
    capsys.readouterr()
    strict = json.loads((tmp_path / "a" / "cut.json").read_text())
    loose = json.loads((tmp_path / "b" / "cut.json").read_text())
    # 180 frames at 119-frame clips: 2 buckets (shots 1-3 | 4-6). 4 first; 3 is its neighbour,
    # so 2 (bucket 1) follows, unless --allow-adjacent lets 3 in. Cut order: rising score.
    assert [c["shot_id"] for c in strict["clips"]] == [2, 4]
    assert [c["shot_id"] for c in loose["clips"]] == [3, 4]
    assert loose["settings"]["allow_adjacent"] is True
    assert [c["frames"] for c in loose["clips"]] == [90, 90]
    why = {c["shot_id"]: c["reason"] for c in strict["candidates"]}
    assert why[3] == "next to shot 4, picked already"
    arc = strict["arc"]
    assert [p["shot_id"] for p in arc["picks"]] == [2, 4]
    assert [p["level"] for p in arc["picks"]] == [0.0, 1.0]
    assert arc["target_curve"][0] == {"frame": 0, "seconds": 0.0, "level": 0.2}
    assert arc["target_curve"][-1]["frame"] == strict["achieved"]["frames"] == 180


def test_help_lists_the_options_examples_and_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["trailer", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for expected in ("--profile NAME|FILE[:NAME]", "--allow-adjacent", "(default: 4.0)"):
        assert expected in text
    assert "action, comedy, drama, thriller" in " ".join(text.split())
    assert "examples:\n  qwen-client trailer out --profile thriller" in text
    assert "2    usage error or bad input: not a results folder" in text
