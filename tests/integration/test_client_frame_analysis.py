"""The frame analysis on its own thread (``client.media.frame_analysis``): a whole-film pass with
the analysis trailing the decoder finds the very shots, transitions and samples of the inline
analysis, an analysis error reaches the caller of the pass, and no analysis thread outlives the
pass, whether it ended, failed or was abandoned."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from client.media import frame_analysis, scan
from client.media.probe import probe
from client.media.scan import ShotScanner
from client.options import ExtractOptions
from tests.film_factory import FilmTruth
from tests.transition_films import joined_film


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return joined_film(tmp_path_factory.mktemp("analysis") / "joins.mp4", 9)


def _analysis_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "frame-analysis"]


def _records(path: Path) -> list[dict[str, Any]]:
    return [
        {**s.shot.as_record(), "samples": [c.frame_no for c in s.samples]}
        for s in ShotScanner(probe(path), ExtractOptions())
    ]


@pytest.mark.parametrize("lag", [1, 3, scan.PIPELINE_LAG])
def test_a_trailing_analysis_finds_what_the_inline_one_finds(
    film: FilmTruth, lag: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan, "PIPELINE_LAG", 0)
    inline = _records(film.path)
    monkeypatch.setattr(scan, "PIPELINE_LAG", lag)
    seen: list[str] = []
    original = frame_analysis.FrameAnalyser.analyse

    def analyse(self: frame_analysis.FrameAnalyser, frame_no: int, frame: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(self, frame_no, frame)

    monkeypatch.setattr(frame_analysis.FrameAnalyser, "analyse", analyse)
    trailing = _records(film.path)
    assert trailing == inline
    # The transitions are there (the film joins its shots by dissolves and fades).
    assert any(r["transition_out"] and r["transition_out"]["kind"] != "cut" for r in inline)
    assert set(seen) == {"frame-analysis"} and len(seen) == film.frame_count
    assert not _analysis_threads()


def test_an_analysis_error_reaches_the_caller(
    film: FilmTruth, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = frame_analysis.FrameAnalyser.analyse

    def analyse(self: frame_analysis.FrameAnalyser, frame_no: int, frame: Any) -> Any:
        if frame_no == 100:
            raise ValueError("analysis broke at frame 100")
        return original(self, frame_no, frame)

    monkeypatch.setattr(frame_analysis.FrameAnalyser, "analyse", analyse)
    with pytest.raises(ValueError, match="frame 100"):
        _records(film.path)
    assert not _analysis_threads()


def test_an_abandoned_pass_leaves_no_analysis_thread(film: FilmTruth) -> None:
    shots = iter(ShotScanner(probe(film.path), ExtractOptions()))
    first = next(shots)
    assert first.shot.shot_id == 1 and _analysis_threads()
    shots.close()  # what a consumer that stops early does (ShotSource.close)
    assert not _analysis_threads()


def test_a_stopped_pass_leaves_no_analysis_thread(film: FilmTruth) -> None:
    stop = threading.Event()
    scanner = ShotScanner(probe(film.path), ExtractOptions(), stop=stop)
    found = []
    for scanned in scanner:
        found.append(scanned.shot.shot_id)
        stop.set()
    assert found == [1] and scanner.stats.stopped_early
    assert not _analysis_threads()
