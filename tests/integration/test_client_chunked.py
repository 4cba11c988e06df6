"""Chunked parallel decode (``client.pipeline.chunked``) against the one pass, on real films.

The film has fixed keyframes (every 50 frames, no extra ones at cuts) plus forced ones, so the
chunk borders fall where each test wants them: on a keyframe that is a hard cut, inside a long
shot, inside a dissolve. Every comparison is of everything a run writes per shot: the record
(frames, times, SMPTE, transition fields), the sample frame numbers, the JPEG bytes and the
audio features, against ``ShotSource`` (one pass, one process).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from client.media.keyframes import build_index
from client.media.probe import VideoInfo, probe
from client.media.scan import ShotScanner
from client.media.seams import DecodeWindow, warm_frames
from client.options import ExtractOptions, TimeRange
from client.pipeline.chunked import ChunkedShotSource
from client.pipeline.source import ShotSource
from tests.film_factory import FilmTruth, Join, ShotSpec, corrupt_stream_packets, make_film

CUT_AT_KEYFRAME = 230  # a hard cut on a forced keyframe
INSIDE_SHOT = 330  # a keyframe inside shot 2 (230..389)
INSIDE_DISSOLVE = 460  # a forced keyframe inside the dissolve 450..469


def _film(path: Path) -> FilmTruth:
    shots = [
        ShotSpec(frames=230, brightness=0.7, pattern="bars", audio="tone", tone_hz=440.0),
        ShotSpec(frames=160, brightness=0.4, pattern="checker", audio="noise", amplitude=0.3),
        ShotSpec(frames=60, brightness=0.75, pattern="circles", audio="tone", tone_hz=660.0),
        ShotSpec(frames=100, brightness=0.35, pattern="gradient", audio="silence"),
        ShotSpec(frames=92, brightness=0.8, pattern="noise", audio="tone", tone_hz=880.0),
        ShotSpec(frames=90, brightness=0.3, pattern="bars", audio="noise", amplitude=0.2),
    ]
    joins = [None, None, Join("dissolve", 20), Join("fade", 10, black=8), None]
    return make_film(
        path,
        shots,
        size=(160, 120),
        gop=50,
        scenecut=False,
        keyframes=[CUT_AT_KEYFRAME, INSIDE_DISSOLVE],
        joins=joins,
    )


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> FilmTruth:
    return _film(tmp_path_factory.mktemp("chunked") / "film.mp4")


@pytest.fixture(scope="module")
def info(film: FilmTruth) -> VideoInfo:
    return probe(film.path)


def _records(source: ShotSource) -> list[tuple[Any, ...]]:
    try:
        return [(p.base_record(), p.jpegs, p.audio_features) for p in source]
    finally:
        source.close()


@pytest.fixture(scope="module")
def one_pass(info: VideoInfo) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    source = ShotSource(info, ExtractOptions())
    records = _records(source)
    return records, source.scanner.stats.as_record()


def test_the_film_has_the_keyframes_the_tests_need(film: FilmTruth) -> None:
    index = build_index(film.path)
    assert index.problem is None
    assert index.frames == film.frame_count
    for frame in (CUT_AT_KEYFRAME, INSIDE_SHOT, INSIDE_DISSOLVE):
        assert frame in index.keyframes
    assert CUT_AT_KEYFRAME in film.cut_frames


def test_the_dissolve_crosses_its_border(
    one_pass: tuple[list[tuple[Any, ...]], dict[str, Any]],
) -> None:
    outs = [r[0]["transition_out"] for r in one_pass[0]]
    assert any(
        t["kind"] == "dissolve" and t["start_frame"] <= INSIDE_DISSOLVE <= t["end_frame"]
        for t in outs
        if t is not None
    )


@pytest.mark.parametrize(
    "borders",
    [[CUT_AT_KEYFRAME], [INSIDE_SHOT], [INSIDE_DISSOLVE], [CUT_AT_KEYFRAME, INSIDE_DISSOLVE]],
    ids=["cut-on-border", "shot-spans-border", "dissolve-across-border", "three-chunks"],
)
def test_chunks_give_the_one_pass_shots(
    info: VideoInfo, one_pass: tuple[list[tuple[Any, ...]], dict[str, Any]], borders: list[int]
) -> None:
    source = ChunkedShotSource(info, ExtractOptions(), workers=len(borders) + 1, borders=borders)
    records = _records(source)
    scanner = source.scanner
    assert scanner.fallback_reason is None
    assert [c.start for c in scanner.plan] == [0, *borders]
    assert records == one_pass[0]
    assert scanner.stats.as_record() == one_pass[1]
    assert source.shot_ids == list(range(1, len(records) + 1))
    # A chunk takes over at the first shot start at or after its border (or not at all, when
    # the chunk before it reached the film's end first: then its shots are the one pass's).
    starts = [r[0]["start_frame"] for r in records]
    for seam in scanner.seams:
        assert seam["frame"] == min(s for s in starts if s >= seam["border"])


def _keys(info: VideoInfo, seek: int) -> dict[int, Any]:
    """The sync keys of a pass starting at keyframe ``seek`` (0: the film's start)."""
    index = build_index(info.path)
    options = ExtractOptions()
    keys: dict[int, Any] = {}
    window = DecodeWindow(
        index.pts,
        index.seconds(0),
        index.pts[seek] if seek else None,
        on_boundary=keys.__setitem__,
        warm=warm_frames(options, info.fps, ShotScanner(info, options).capacity),
    )
    for _ in ShotScanner(info, options, window=window):
        pass
    return keys


def test_a_cut_on_the_border_is_neither_lost_nor_doubled(
    info: VideoInfo, one_pass: tuple[list[tuple[Any, ...]], dict[str, Any]]
) -> None:
    source = ChunkedShotSource(info, ExtractOptions(), workers=2, borders=[CUT_AT_KEYFRAME])
    records = _records(source)
    starts = [r[0]["start_frame"] for r in records]
    assert starts.count(CUT_AT_KEYFRAME) == 1
    assert records == one_pass[0]
    # The seam is there: the pass from the chunk's keyframe agrees with the one pass at the
    # cut (whether the chunk before it was still decoding then depends on the machine's load).
    seek = source.scanner.plan[1].seek
    one, chunk = _keys(info, 0), _keys(info, seek)
    assert chunk[CUT_AT_KEYFRAME] is not None
    assert chunk[CUT_AT_KEYFRAME] == one[CUT_AT_KEYFRAME]
    assert all(s["frame"] == CUT_AT_KEYFRAME for s in source.scanner.seams)


def test_the_planned_chunks_give_the_one_pass_shots(
    info: VideoInfo, one_pass: tuple[list[tuple[Any, ...]], dict[str, Any]]
) -> None:
    source = ChunkedShotSource(info, ExtractOptions(), workers=3)
    records = _records(source)
    assert len(source.scanner.plan) == 3
    assert records == one_pass[0]


def test_without_transitions_too(info: VideoInfo) -> None:
    options = ExtractOptions()
    options = replace(options, detection=replace(options.detection, transitions=False))
    expected = _records(ShotSource(info, options))
    source = ChunkedShotSource(info, options, workers=2, borders=[INSIDE_DISSOLVE])
    assert _records(source) == expected


def test_resume_skips_the_done_shots(
    info: VideoInfo, one_pass: tuple[list[tuple[Any, ...]], dict[str, Any]]
) -> None:
    source = ChunkedShotSource(info, ExtractOptions(), workers=2, skip={1, 2})
    records = _records(source)
    assert records == one_pass[0][2:]
    assert source.shot_ids == list(range(1, len(one_pass[0]) + 1))


def test_a_time_range_is_decoded_in_one_pass(info: VideoInfo) -> None:
    options = replace(ExtractOptions(), range=TimeRange(5.0, 20.0))
    expected = _records(ShotSource(info, options))
    source = ChunkedShotSource(info, options, workers=2)
    assert _records(source) == expected
    assert "time range" in (source.scanner.fallback_reason or "")
    assert source.scanner.plan == []


def _workers(source: ChunkedShotSource) -> list[Any]:
    return [state.process for state in source.scanner._states]


def test_one_worker_process_when_decoding_must_leave_this_process(
    info: VideoInfo, one_pass: tuple[list[tuple[Any, ...]], dict[str, Any]]
) -> None:
    """A server job decodes in a worker process even with one worker (never in the server):
    one chunk, the whole film, the one pass's shots."""
    source = ChunkedShotSource(info, ExtractOptions(), workers=1, one_pass_here=False)
    records = _records(source)
    assert source.scanner.fallback_reason is None
    frames = build_index(info.path).frames
    assert [(c.seek, c.start, c.end) for c in source.scanner.plan] == [(0, 0, frames)]
    assert len(_workers(source)) == 1 and all(p.exitcode == 0 for p in _workers(source))
    assert records == one_pass[0]
    assert source.scanner.stats.as_record() == one_pass[1]


def test_close_mid_film_stops_every_worker(info: VideoInfo) -> None:
    source = ChunkedShotSource(info, ExtractOptions(), workers=3)
    for _ in source:
        break  # the consumer stops after the first shot
    source.close()
    procs = _workers(source)
    assert len(procs) == 3
    assert all(p.exitcode is not None for p in procs)
    assert not multiprocessing.active_children()


def test_an_error_in_the_consumer_stops_every_worker(info: VideoInfo) -> None:
    source = ChunkedShotSource(info, ExtractOptions(), workers=2)
    with pytest.raises(RuntimeError, match="sink failed"):
        for prepared in source:
            if prepared.shot.shot_id == 2:
                raise RuntimeError("sink failed")
    assert all(p.exitcode is not None for p in _workers(source))
    assert not multiprocessing.active_children()


def test_a_damaged_film_falls_back_to_one_pass(tmp_path: Path) -> None:
    film = _film(tmp_path / "damaged.mp4")
    corrupt_stream_packets(film.path, "video", after_seconds=20.0, every=40)
    info = probe(film.path)
    options = ExtractOptions()
    one = ShotSource(info, options)
    expected = _records(one)
    source = ChunkedShotSource(info, options, workers=2, borders=[INSIDE_SHOT])
    assert _records(source) == expected
    assert source.scanner.fallback_reason is not None
    assert source.scanner.stats.as_record() == one.scanner.stats.as_record()
