"""Output directory: torn-line repair, manifest checks, deterministic final files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.errors import OutputConflict
from client.outputs import OutputDir, summarize
from qwen_server.contract.constants import ATTRIBUTES


def _record(shot_id: int, score: float = 0.5) -> dict:
    return {
        "shot_id": shot_id,
        "start_frame": (shot_id - 1) * 10,
        "end_frame": shot_id * 10 - 1,
        "frame_count": 10,
        "start_time": (shot_id - 1) * 0.4,
        "end_time": shot_id * 0.4,
        "duration": 0.4,
        "start_timecode": "00:00:00.000",
        "end_timecode": "00:00:00.400",
        "sample_frames": [1, 3, 5],
        "caption": f"shot {shot_id}",
        "attributes": {a: score for a in ATTRIBUTES},
        "audio_class": "music",
        "model": "m",
        "audio_features": {"rms_energy_mean": 0.1, "tempo": None},
    }


MANIFEST = {
    "format": 1,
    "command": "analyze",
    "film": {"name": "f.mp4", "size": 1},
    "settings": {"a": 1},
}


def test_torn_last_line_is_dropped_and_resume_continues(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    assert out.prepare(MANIFEST, force=False) == set()
    out.append([_record(1), _record(2)])
    with out.shots_path.open("a") as f:
        f.write(json.dumps(_record(3))[:37])  # killed mid-write
    again = OutputDir(tmp_path)
    assert again.prepare(MANIFEST, force=False) == {1, 2}
    assert out.shots_path.read_text().endswith("}\n")  # the torn tail was cut off
    again.append([_record(3)])
    assert [r["shot_id"] for r in again.records()] == [1, 2, 3]


def test_duplicate_lines_count_once(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.prepare(MANIFEST, force=False)
    out.append([_record(2), _record(1)])
    out.append([_record(2)])
    assert [r["shot_id"] for r in out.records()] == [1, 2]


def test_other_settings_are_refused_unless_forced(tmp_path: Path) -> None:
    OutputDir(tmp_path).prepare(MANIFEST, force=False)
    OutputDir(tmp_path).append([_record(1)])
    other = dict(MANIFEST, settings={"a": 2})
    with pytest.raises(OutputConflict, match=r"settings\.a \(1 -> 2\)"):
        OutputDir(tmp_path).prepare(other, force=False)
    assert OutputDir(tmp_path).prepare(other, force=True) == set()  # --force starts over
    assert not (tmp_path / "shots.jsonl").exists()


def test_results_without_manifest_are_not_adopted(tmp_path: Path) -> None:
    (tmp_path / "shots.jsonl").write_text(json.dumps(_record(1)) + "\n")
    with pytest.raises(OutputConflict, match="without a run manifest"):
        OutputDir(tmp_path).prepare(MANIFEST, force=False)


def test_finalize_sorts_and_is_independent_of_arrival_order(tmp_path: Path) -> None:
    files = []
    for order in ([3, 1, 2], [1, 2, 3]):
        d = tmp_path / "-".join(map(str, order))
        out = OutputDir(d)
        out.prepare(MANIFEST, force=False)
        for sid in order:
            out.append([_record(sid, score=sid / 10)])
        records = out.records()
        out.finalize(summarize(records, {"name": "f.mp4"}, {"a": 1}, analysed=True), analysed=True)
        files.append([(d / n).read_bytes() for n in ("shots.jsonl", "shots.csv", "summary.json")])
        assert json.loads((d / "run.json").read_text())["complete"] is True
    assert files[0] == files[1]


def test_summary_has_means_maxima_and_top_shots() -> None:
    records = [_record(i, score=s) for i, s in [(1, 0.2), (2, 0.9), (3, 0.5)]]
    summary = summarize(records, {"name": "f.mp4"}, {"x": 1}, analysed=True)
    assert summary["shot_count"] == 3 and summary["duration"] == pytest.approx(1.2)
    suspense = summary["attributes"]["suspense"]
    assert suspense["mean"] == pytest.approx(0.533333, abs=1e-5) and suspense["max"] == 0.9
    assert [t["shot_id"] for t in suspense["top_shots"]] == [2, 3, 1]
    assert summary["model"] == "m" and summary["audio_classes"] == {"music": 3}
    assert summary["settings"] == {"x": 1}


def test_summary_counts_speech_measured_and_speech_errors() -> None:
    measured = _record(1) | {"audio_features": {"rms_energy_mean": 0.1, "speech_ratio": 0.0}}
    failed = _record(2) | {"speech_error": "silero-vad is not installed"}
    summary = summarize([measured, failed, _record(3)], {"name": "f"}, {}, analysed=False)
    assert summary["shots_with_speech_measured"] == 1
    assert summary["shots_with_speech_error"] == 1
