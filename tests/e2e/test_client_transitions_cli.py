"""``qwen-client shots`` on a film with a dissolve, a fade through black and a hard cut: the
transition fields in shots.jsonl, summary.json's ``transitions`` and ``technical_cues``, and
``--no-transitions`` (hard cuts only, black not looked for)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli_runner import run_cli
from tests.film_factory import FilmTruth, Join, ShotSpec, make_film


def _film(path: Path) -> FilmTruth:
    specs = [
        ShotSpec(frames=45, brightness=0.7, pattern="checker", audio="tone"),
        ShotSpec(frames=45, brightness=0.4, pattern="circles", audio="noise"),
        ShotSpec(frames=45, brightness=0.6, pattern="noise", audio="tone"),
        ShotSpec(frames=45, brightness=0.5, pattern="gradient", audio="noise"),
    ]
    return make_film(path, specs, joins=[Join("dissolve", 16), Join("fade", 12, 10), None])


def _shots(film: Path, out: Path, *extra: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    proc = run_cli("shots", str(film), "--out", str(out), "--quiet", *extra)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "shots.jsonl").read_text().splitlines()]
    return records, json.loads((out / "summary.json").read_text())


def test_shots_writes_typed_transitions_and_black_cues(tmp_path: Path) -> None:
    truth = _film(tmp_path / "film.mp4")
    records, summary = _shots(truth.path, tmp_path / "out")
    assert len(records) == 4
    kinds = [(t["kind"], t["from_shot"], t["to_shot"]) for t in summary["transitions"]]
    assert kinds == [("dissolve", 1, 2), ("fade_out", 2, 3), ("fade_in", 2, 3), ("cut", 3, 4)]
    (black,) = summary["technical_cues"]
    true_black = next(t for t in truth.transitions if t.kind == "black")
    assert abs(black["start_frame"] - true_black.first) <= 2
    assert abs(black["end_frame"] - true_black.last) <= 2
    assert records[0]["transition_out"] == records[1]["transition_in"]
    for rec in records:
        for key in ("in_frame", "out_frame", "in_time", "out_time", "in_smpte", "out_smpte"):
            assert rec[key] is not None, key
        images = [int(Path(name).stem.split("_f")[1]) for name in rec["images"]]
        assert all(rec["in_frame"] <= n <= rec["out_frame"] for n in images)


def test_no_transitions_gives_hard_cuts_only(tmp_path: Path) -> None:
    truth = _film(tmp_path / "film.mp4")
    records, summary = _shots(truth.path, tmp_path / "out", "--no-transitions")
    assert summary["technical_cues"] == []
    assert {t["kind"] for t in summary["transitions"]} <= {"cut"}
    for rec in records:
        assert rec["technical_cues"] is None
        assert (rec["in_frame"], rec["out_frame"]) == (rec["start_frame"], rec["end_frame"])
