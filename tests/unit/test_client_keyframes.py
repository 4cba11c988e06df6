"""The frame index, the chunk plan and the decode window of the chunked decode."""

from __future__ import annotations

from array import array
from fractions import Fraction
from pathlib import Path

import av
import pytest

from client.media.keyframes import FrameIndex, build_index, chunks_from_borders, plan_chunks
from client.media.seams import ChunkUnsafe, DecodeWindow
from tests.film_factory import ShotSpec, make_film


def _index(frames: int, gop: int, problem: str | None = None) -> FrameIndex:
    return FrameIndex(
        array("q", range(0, frames * 512, 512)),
        tuple(range(0, frames, gop)),
        Fraction(1, 12800),
        frames,
        problem,
    )


@pytest.mark.parametrize(
    ("frames", "gop", "chunks", "warm"),
    [(3000, 50, 2, 135), (180_000, 250, 16, 135), (5000, 250, 3, 300)],
)
def test_the_plan_tiles_the_film_at_keyframes_with_balanced_costs(
    frames: int, gop: int, chunks: int, warm: int
) -> None:
    index = _index(frames, gop)
    plan = plan_chunks(index, chunks, warm)
    assert len(plan) == chunks
    assert plan[0].start == plan[0].seek == 0
    assert plan[-1].end == frames
    for before, after in zip(plan, plan[1:], strict=False):
        assert before.end == after.start
        assert after.start in index.keyframes and after.seek in index.keyframes
        assert after.seek <= after.start - warm
        assert after.start - warm - after.seek < gop  # the last keyframe far enough back
    ideal = (frames + (chunks - 1) * warm) / chunks
    assert max(c.cost for c in plan) <= ideal + 2 * gop


def test_a_film_too_short_or_not_safe_is_one_chunk() -> None:
    assert len(plan_chunks(_index(3000, 50), 1, 135)) == 1
    assert len(plan_chunks(_index(3000, 50, problem="two packets share a timestamp"), 4, 135)) == 1
    assert len(plan_chunks(_index(100, 50), 2, 135)) == 1  # no border leaves room for warm-up


def test_borders_must_be_keyframes() -> None:
    index = _index(1000, 50)
    plan = chunks_from_borders(index, [500], 135)
    assert [(c.seek, c.start, c.end) for c in plan] == [(0, 0, 500), (350, 500, 1000)]
    with pytest.raises(ValueError, match="not a keyframe"):
        chunks_from_borders(index, [510], 135)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kf") / "kf.mp4"
    shots = [ShotSpec(frames=70, pattern="bars", audio=None), ShotSpec(frames=50, audio=None)]
    make_film(path, shots, size=(96, 64), gop=30, scenecut=False, keyframes=[70])
    return path


def test_the_index_lists_every_frame_and_keyframe(film: Path) -> None:
    index = build_index(film)
    assert index.problem is None
    assert index.frames == index.packets == 120
    assert index.keyframes == (0, 30, 60, 70, 100)
    with av.open(str(film)) as container:
        times = [f.time for f in container.decode(video=0)]
    assert [index.seconds(k) for k in range(120)] == pytest.approx(times)


def test_the_window_numbers_frames_from_the_index_and_refuses_a_gap(film: Path) -> None:
    index = build_index(film)
    window = DecodeWindow(index.pts, index.seconds(0), seek_pts=index.pts[60])
    with av.open(str(film)) as container:
        stream = container.streams.video[0]
        window.seek(container, stream)
        frames = container.decode(stream)
        assert [window.number(next(frames)) for _ in range(5)] == [60, 61, 62, 63, 64]
        next(frames)  # frame 65 never reaches the window: a frame the decoder lost
        with pytest.raises(ChunkUnsafe, match="frame 65 was expected"):
            window.number(next(frames))
    assert window.first_frame == 60
