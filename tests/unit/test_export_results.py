"""``client.export.results.load_results``: a results folder read into typed objects (real files
written as the client writes them), the film's exact rate from every source it may come from,
and clear errors for folders that are not results."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from client.errors import EXIT_USAGE, InputError
from client.export.results import load_results, parse_rate, snap_rate


def record(shot_id: int, start: int, end: int, fps: Fraction, **extra: object) -> dict:
    """A shots.jsonl record of frames ``start..end`` (inclusive) at ``fps``."""
    return {
        "shot_id": shot_id,
        "start_frame": start,
        "end_frame": end,
        "frame_count": end - start + 1,
        "start_time": round(float(start / fps), 6),
        "end_time": round(float((end + 1) / fps), 6),
        **extra,
    }


def write_folder(
    path: Path,
    records: list[dict],
    manifest: dict | None = None,
    summary: dict | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "shots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if manifest is not None:
        (path / "run.json").write_text(json.dumps(manifest))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


NTSC = Fraction(30000, 1001)


def test_shots_come_back_in_shot_order_with_their_fields(tmp_path: Path) -> None:
    recs = [
        record(2, 30, 69, Fraction(24), caption="b", attributes={"darkness": 0.2, "zeal": 0.9}),
        record(1, 0, 29, Fraction(24), caption="a", attributes={"suspense": 0.7, "darkness": 0.1}),
    ]
    manifest = {"film": {"name": "film.mp4"}}
    results = load_results(write_folder(tmp_path / "r", recs, manifest, {"shot_count": 2}))
    assert [s.shot_id for s in results.shots] == [1, 2]
    first = results.shots[0]
    assert (first.start_frame, first.end_frame, first.frame_count) == (0, 29, 30)
    assert first.caption == "a" and first.attributes == {"suspense": 0.7, "darkness": 0.1}
    assert results.vocabulary == ("suspense", "darkness", "zeal")  # first seen, in shot order
    assert results.summary == {"shot_count": 2} and results.analysed
    assert results.film.name == "film.mp4" and results.film.path is None
    assert results.film.fps == 24 and results.film.frame_count == 70
    assert results.shots[1].top_attributes(1) == [("zeal", 0.9)]
    assert results.directory == (tmp_path / "r").resolve()


def test_the_rate_comes_from_run_json_source_first(tmp_path: Path) -> None:
    film = tmp_path / "films" / "film.mov"
    manifest = {
        "film": {"name": "film.mov"},
        "source": {
            "path": str(film),
            "fps": "30000/1001",
            "fps_float": 29.97003,
            "width": 1920,
            "height": 1080,
            "drop_frame": True,
        },
    }
    summary = {"film": {"fps": 25.0, "width": 320, "height": 240}, "frame_count": 900}
    folder = write_folder(tmp_path / "r", [record(1, 0, 99, NTSC)], manifest, summary)
    results = load_results(folder)
    assert results.film.fps == NTSC and results.film.path == film.resolve()
    assert (results.film.width, results.film.height) == (1920, 1080)
    assert results.film.drop_frame is True and results.film.frame_count == 900
    assert not results.analysed


def test_the_rate_falls_back_to_summary_then_to_the_records(tmp_path: Path) -> None:
    recs = [record(1, 0, 29, NTSC), record(2, 30, 89, NTSC), record(3, 90, 149, NTSC)]
    summary = {"film": {"fps": 29.97002997002997, "width": 320, "height": 240}}
    assert load_results(write_folder(tmp_path / "a", recs, {}, summary)).film.fps == NTSC
    bare = load_results(write_folder(tmp_path / "b", recs))
    assert bare.film.fps == NTSC and bare.film.width is None and bare.film.name == "film"
    pal = [record(1, 0, 24, Fraction(25)), record(2, 25, 60, Fraction(25))]
    assert load_results(write_folder(tmp_path / "c", pal)).film.fps == 25


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        (24.0, Fraction(24)),
        (23.976, Fraction(24000, 1001)),
        (29.97, NTSC),
        (30.0, Fraction(30)),
        (59.94, Fraction(60000, 1001)),
        (12.5, Fraction(25, 2)),
    ],
)
def test_float_rates_snap_to_the_exact_rate(value: float, rate: Fraction) -> None:
    assert snap_rate(value) == rate


def test_parse_rate_reads_fractions_and_rejects_nonsense() -> None:
    assert parse_rate("30000/1001") == NTSC and parse_rate(25) == 25
    assert parse_rate("0/1") is None and parse_rate("x/y") is None and parse_rate(None) is None


def test_a_torn_last_line_is_skipped_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "r", [record(1, 0, 29, Fraction(25))])
    with (folder / "shots.jsonl").open("a") as f:
        f.write('{"shot_id": 2, "start_fr')
    assert [s.shot_id for s in load_results(folder).shots] == [1]
    (folder / "shots.jsonl").write_text('not json\n{"shot_id": 1}\n')
    with pytest.raises(InputError, match=r"shots.jsonl:1: not a shot record"):
        load_results(folder)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such directory"),
        (lambda p: (p.mkdir(), p)[1], "has no shots.jsonl"),
        (lambda p: write_folder(p, []), "holds no shots"),
        (lambda p: write_folder(p, [{"shot_id": 1, "start_frame": 0}]), "shot 1 lacks"),
    ],
)
def test_folders_that_are_not_results_are_input_errors(tmp_path: Path, make, message: str) -> None:
    folder = make(tmp_path / "r")
    with pytest.raises(InputError, match=message) as caught:
        load_results(folder)
    assert caught.value.exit_code == EXIT_USAGE
