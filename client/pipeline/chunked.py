"""Chunked parallel decode: the one-pass shots, found by several worker processes at once.

``ChunkedShotSource(info, options, workers=N, skip=done, progress=...)`` is a ``ShotSource``
(same iteration, ``close``, ``scanner.stats``, ``audio_report``, ``shot_ids``) whose scanner is
a ``ChunkedScanner``:

1. ``client.media.keyframes.build_index``: one demux-only pass gives every frame's pts and the
   keyframes; ``plan_chunks`` splits the film at keyframes into ``workers`` chunks of equal
   cost (warm-up included).
2. One process per chunk (``multiprocessing`` *spawn* context: no fork of a process with
   threads) runs the ordinary scanner from a keyframe ``warm_frames`` before its border
   (``client.pipeline.chunk_worker``), numbering frames from the index, and sends its shots
   (samples already JPEG-encoded) and the sync key of every shot start
   (``client.media.seams``).
3. The parent stitches, in film order. A chunk's shots starting before the next border are
   its own. Past the border the chunk keeps decoding until the seam is settled: the first shot
   start ``f`` at or after the border where its sync key equals the next chunk's (history
   equal, so everything from ``f`` on is decided alike) **and** the shot starting at ``f`` is
   identical in both (frames, samples' JPEG bytes, transition fields). Then the next chunk
   takes over at ``f`` (its shot ids are shifted to follow on) and the chunk is stopped. A
   seam that does not agree is never taken: the chunk extends to the next shot start (and may
   take over from a later chunk instead, or run to the film's end). Every shot emitted is
   checked to follow the previous one (ids and frames without gap or overlap).
4. Audio is not split: the parent decodes the film's audio once, as the one pass does, and
   computes each shot's features on its prepare threads (``ShotSource``), from the same stream
   times, so they are the one pass's features.

Where the film cannot be split identically the source decodes it in one pass, in this process,
and says why (``ChunkedScanner.fallback_reason``, logged): a time range (its shots' ids count
from the film's start and its clipping follows each frame: decoded from frame 0 in one pass,
as without ``--workers``), an index problem, a film too short to gain, or a worker finding a
frame that is not the index's next one (a damaged film: then the one pass starts again from
frame 0 and the shots already emitted are checked against it, not repeated).

Processes: ``close`` (called on every exit path, Ctrl-C included) sets every worker's stop
event, joins them, and terminates those still running after ``JOIN_SECONDS``; workers ignore
SIGINT and stop by themselves if the parent dies.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from client.errors import ClientError
from client.media.assembly import ScannedShot
from client.media.keyframes import Chunk, FrameIndex, build_index, chunks_from_borders, plan_chunks
from client.media.probe import VideoInfo, open_container
from client.media.scan import ScanStats, ShotScanner
from client.media.seams import SyncKey, warm_frames
from client.options import ExtractOptions
from client.pipeline.chunk_worker import ChunkJob, run_chunk
from client.pipeline.source import ShotSource
from client.progress import Progress

log = logging.getLogger("client.pipeline")

JOIN_SECONDS = 3.0


class SeamMismatch(ClientError):
    """Stitched shots that do not follow each other (a bug: never written)."""


@dataclass
class _ChunkState:
    """What the parent knows of one chunk's worker."""

    chunk: Chunk
    keys: dict[int, SyncKey | None] = field(default_factory=dict)
    key_order: list[int] = field(default_factory=list)
    key_pos: int = 0
    shots: deque[ScannedShot] = field(default_factory=deque)
    frontier: int = -1  # every frame up to here is committed (its keys were sent)
    ended: bool = False
    stats: ScanStats | None = None
    failed: str | None = None
    offset: int | None = None  # global shot id - the worker's shot id
    stop: Any = None
    process: Any = None

    @property
    def usable(self) -> bool:
        return self.failed is None


def _same(a: ScannedShot, b: ScannedShot) -> bool:
    """Two passes' versions of one shot, ids aside: frames, times, transition fields, samples."""
    return (
        replace(a.shot, shot_id=0) == replace(b.shot, shot_id=0)
        and a.shot.marks == b.shot.marks
        and [(c.frame_no, c.frame) for c in a.samples] == [(c.frame_no, c.frame) for c in b.samples]
        and (a.stream_start, a.stream_end) == (b.stream_start, b.stream_end)
    )


def first_frame_time(info: VideoInfo) -> tuple[int | None, float | None]:
    """pts and time (``frame.time``, as the one pass reads it) of the film's first frame."""
    from client.media.probe import find_video_stream

    container = open_container(info.path)
    try:
        stream = find_video_stream(container, info.path.name)
        stream.thread_type = "SLICE"
        for frame in container.decode(stream):
            return frame.pts, float(frame.time) if frame.time is not None else None
        return None, None
    finally:
        container.close()


class ChunkedScanner:
    """Duck-types ``ShotScanner`` for ``ShotSource`` (see module doc): iterating yields the
    one-pass ``ScannedShot``s in film order, their samples' frames already JPEG bytes (or, after
    a fallback to one pass, decoded frames); ``stats`` is the one pass's ``ScanStats``."""

    def __init__(
        self,
        info: VideoInfo,
        options: ExtractOptions,
        workers: int,
        on_frame: Callable[[int, float], None] | None = None,
        stop: threading.Event | None = None,
        borders: list[int] | None = None,
        context: str = "spawn",
    ) -> None:
        self.info = info
        self.options = options
        self.workers = max(1, workers)
        self.on_frame = on_frame
        self.stop = stop or threading.Event()
        self.borders = borders
        self.context = context
        self._one = ShotScanner(info, options, on_frame=on_frame, stop=self.stop)
        self.stats = self._one.stats
        self.output_size = self._one.output_size
        self.plan: list[Chunk] = []
        self.fallback_reason: str | None = None
        self.seams: list[dict[str, int]] = []  # where each chunk took over
        self.frames_decoded = 0  # by every worker together (warm-ups and overruns included)
        self._states: list[_ChunkState] = []
        self._queue: Any = None
        self._last_id = 0
        self._last_end = -1
        self._bounds: list[tuple[int, int]] = []  # (start, end) of every shot emitted
        self._closed = False
        self._audio_time = 0.0  # stream end of the last emitted shot (audio pacing)

    # --- plan -----------------------------------------------------------------------------------
    def _why_not(self) -> str | None:
        if self.workers <= 1:
            return "one worker"
        if self.options.range is not None:
            return (
                "a time range is decoded in one pass from the film's first frame (its shot ids "
                "count from there and its clipping follows every frame)"
            )
        return None

    def _prepare_plan(self) -> tuple[FrameIndex, list[Chunk], int, float] | None:
        reason = self._why_not()
        if reason is None:
            index = build_index(self.info.path)
            reason = index.problem
        if reason is None:
            pts0, origin = first_frame_time(self.info)
            if origin is None or pts0 != index.pts[0]:
                reason = "the first decoded frame is not the first frame of the index"
        if reason is None:
            warm = warm_frames(self.options, self.info.fps, self._one.capacity)
            if self.borders is not None:
                plan = chunks_from_borders(index, self.borders, warm)
            else:
                plan = plan_chunks(index, self.workers, warm)
            if len(plan) < 2:
                reason = f"the film is too short to split ({index.frames} frames)"
        if reason is not None:
            self.fallback_reason = reason
            if self.workers > 1:
                log.info("%s: decoding in one pass: %s", self.info.path.name, reason)
            return None
        assert origin is not None
        self.plan = plan
        return index, plan, warm, origin

    # --- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[ScannedShot]:
        prepared = self._prepare_plan()
        if prepared is None:
            yield from self._one_pass()
            return
        index, plan, warm, origin = prepared
        try:
            self._start_workers(index, plan, warm, origin)
            if self.on_frame is not None:
                self.on_frame(0, origin)
            redo = yield from self._stitch(index, origin)
        finally:
            self.close()
        if redo is not None:
            self.fallback_reason = redo
            log.warning(
                "%s: %s; decoding again in one pass from the start (the %d shots already "
                "found are checked, not repeated)",
                self.info.path.name,
                redo,
                self._last_id,
            )
            yield from self._one_pass()

    def _one_pass(self) -> Iterator[ScannedShot]:
        """The film in one pass, in this process; shots already emitted are checked, skipped."""
        scanner = ShotScanner(self.info, self.options, on_frame=self.on_frame, stop=self.stop)
        self._one = scanner
        self.stats = scanner.stats
        done = len(self._bounds)
        for scanned in scanner:
            shot = scanned.shot
            if shot.shot_id <= done:
                if self._bounds[shot.shot_id - 1] != (shot.start_frame, shot.end_frame):
                    raise SeamMismatch(
                        f"{self.info.path.name}: the one-pass decode gives shot {shot.shot_id} "
                        f"frames {shot.start_frame}-{shot.end_frame}, the chunked decode gave "
                        f"{self._bounds[shot.shot_id - 1]}"
                    )
                continue
            yield scanned

    def _start_workers(
        self, index: FrameIndex, plan: list[Chunk], warm: int, origin: float
    ) -> None:
        ctx = multiprocessing.get_context(self.context)
        self._queue = ctx.Queue()
        for chunk in plan:
            state = _ChunkState(chunk, stop=ctx.Event())
            job = ChunkJob(self.info, self.options, chunk, index.pts, origin, warm)
            state.process = ctx.Process(
                target=run_chunk,
                args=(job, self._queue, state.stop),
                name=f"decode-chunk-{chunk.number}",
                daemon=True,  # never outlives the parent, even if close() is not reached
            )
            self._states.append(state)
        self._states[0].offset = 0
        for state in self._states:
            state.process.start()
        log.info(
            "%s: %d chunks at frames %s (decoding from %s)",
            self.info.path.name,
            len(plan),
            [c.start for c in plan],
            [c.seek for c in plan],
        )

    # --- messages -------------------------------------------------------------------------------
    def _receive(self) -> None:
        try:
            msg = self._queue.get(timeout=0.2)
        except queue.Empty:
            for state in self._states:
                proc = state.process
                if not state.ended and state.failed is None and not proc.is_alive():
                    state.failed = f"worker exited with code {proc.exitcode}"
            return
        kind, number = msg[0], msg[1]
        state = self._states[number]
        if kind == "key":
            state.keys[msg[2]] = msg[3]
            state.key_order.append(msg[2])
            state.frontier = max(state.frontier, msg[2])
        elif kind == "at":
            state.frontier = max(state.frontier, msg[2])
        elif kind == "shot":
            state.shots.append(msg[2])
        elif kind == "end":
            state.ended, state.stats = True, msg[2]
            state.frontier = max(state.frontier, msg[2].last_frame)
        else:  # unsafe or error
            state.failed = msg[2]
            if kind == "error":
                log.debug("decode chunk %d failed: %s", number, msg[2])
        self._progress()

    def _progress(self) -> None:
        """``frames_decoded``, and the progress bar's count: the frames of their own chunk
        the workers have committed (the audio is paced to the last emitted shot)."""
        decoded = owned = 0
        for state in self._states:
            c, reach = state.chunk, state.frontier + 1
            decoded += max(0, reach - c.seek)
            owned += max(0, min(reach, c.end) - c.start)
        self.frames_decoded = decoded
        if self.on_frame is not None and owned:
            self.on_frame(owned - 1, self._audio_time)

    # --- stitching ------------------------------------------------------------------------------
    def _emit(self, state: _ChunkState, scanned: ScannedShot) -> ScannedShot:
        shot = scanned.shot
        if state.offset is None:
            state.offset = self._last_id + 1 - shot.shot_id
        gid = shot.shot_id + state.offset
        if shot.start_frame != self._last_end + 1 or gid != self._last_id + 1:
            raise SeamMismatch(
                f"{self.info.path.name}: chunk {state.chunk.number} gives shot {gid} at frames "
                f"{shot.start_frame}-{shot.end_frame} after shot {self._last_id} ending at "
                f"frame {self._last_end}"
            )
        self._last_id, self._last_end = gid, shot.end_frame
        self._bounds.append((shot.start_frame, shot.end_frame))
        self._audio_time = scanned.stream_end
        if self.on_frame is not None:
            self.on_frame(shot.end_frame, scanned.stream_end)
        return replace(scanned, shot=replace(shot, shot_id=gid))

    def _find_seam(self, cur: int) -> tuple[int, int] | None | bool:
        """The next (chunk, frame) whose key matches the current chunk's; False: wait."""
        st = self._states[cur]
        border = self.plan[cur + 1].start
        while st.key_pos < len(st.key_order):
            f = st.key_order[st.key_pos]
            key = st.keys[f]
            if f < border or key is None:
                st.key_pos += 1
                continue
            later = [j for j in range(len(self._states) - 1, cur, -1) if self.plan[j].start <= f]
            for j in later:
                sj = self._states[j]
                if not sj.usable:
                    continue
                if f in sj.keys:
                    if sj.keys[f] == key:
                        return j, f
                    continue
                if sj.frontier < f and not sj.ended:
                    return False  # it has not got there yet
            st.key_pos += 1
        return None

    def _stitch(self, index: FrameIndex, origin: float) -> Iterator[ScannedShot]:
        """Generator of the stitched shots (see module doc); returns why the one pass must
        be redone (None when the chunks covered the film)."""
        cur = 0
        pending: tuple[int, int] | None = None
        self._audio_time = origin
        while True:
            if self.stop.is_set():
                self.stats.stopped_early = True
                return None
            st = self._states[cur]
            if st.failed is not None:
                return f"decode chunk {cur} failed: {st.failed.splitlines()[0]}"
            last = cur + 1 >= len(self._states)
            if st.ended:  # it reached the film's end: every shot of it is the one pass's
                pending = None
            limit = math.inf if last or st.ended else self.plan[cur + 1].start
            if pending is not None:
                limit = pending[1]
            while st.shots and st.shots[0].shot.start_frame < limit:
                yield self._emit(st, st.shots.popleft())
            if st.ended and not st.shots:
                return self._finish(st, index, origin)
            if not last and not st.ended:
                if pending is None:
                    found = self._find_seam(cur)
                    if isinstance(found, tuple):
                        pending = found
                        continue
                if pending is not None:
                    j, f = pending
                    sj = self._states[j]
                    while sj.shots and sj.shots[0].shot.start_frame < f:
                        sj.shots.popleft()
                    mine = st.shots[0] if st.shots else None
                    theirs = sj.shots[0] if sj.shots else None
                    if mine is not None and theirs is not None:
                        if mine.shot.start_frame == f == theirs.shot.start_frame and _same(
                            mine, theirs
                        ):
                            self._take_over(cur, j, f)
                            cur, pending = j, None
                            continue
                        log.warning(
                            "%s: chunks %d and %d disagree on the shot at frame %d; chunk %d "
                            "goes on decoding",
                            self.info.path.name,
                            cur,
                            j,
                            f,
                            cur,
                        )
                        pending = None
                        st.key_pos += 1
                        continue
                    if theirs is None and (sj.ended or not sj.usable):
                        pending = None
                        st.key_pos += 1
                        continue
            self._receive()

    def _take_over(self, cur: int, j: int, f: int) -> None:
        """Chunk ``j`` continues the film at frame ``f``; chunks ``cur..j-1`` stop."""
        for k in range(cur, j):
            self._states[k].stop.set()
            self._states[k].shots.clear()
            self._states[k].failed = self._states[k].failed or "replaced"
        self._states[j].offset = None  # set by its first shot, the one at f
        self.seams.append({"chunk": j, "border": self.plan[j].start, "frame": f})
        log.info(
            "%s: chunk %d takes over at frame %d (border %d)",
            self.info.path.name,
            j,
            f,
            self.plan[j].start,
        )

    def _finish(self, st: _ChunkState, index: FrameIndex, origin: float) -> None:
        """The last chunk reached the film's end: the one pass's counters."""
        for other in self._states:
            other.stop.set()
        final = st.stats
        assert final is not None
        self.stats = ScanStats(
            frames=self._last_end + 1,
            packets=index.packets,
            declared_frames=final.declared_frames,
            duration_frames=final.duration_frames,
            first_time=origin,
            last_frame=self._last_end,
            hold_frames=final.hold_frames,
        )
        return None

    def close(self) -> None:
        """Stop every worker and wait for it; terminate (then kill) one that does not stop
        within ``JOIN_SECONDS`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for state in self._states:
            state.stop.set()
        for state in self._states:
            proc = state.process
            if proc is None or proc.pid is None:
                continue
            proc.join(timeout=0)
            for action in (None, proc.terminate, proc.kill):
                if action is not None:
                    action()
                waited = 0.0
                while proc.is_alive() and waited < JOIN_SECONDS:
                    self._drain()  # a worker blocked writing to the queue cannot exit
                    proc.join(timeout=0.1)
                    waited += 0.1
                if not proc.is_alive():
                    break
        self._drain()
        if self._queue is not None:
            self._queue.close()
            self._queue.cancel_join_thread()

    def _drain(self) -> None:
        if self._queue is None:
            return
        with contextlib.suppress(Exception):
            while True:
                self._queue.get_nowait()


class ChunkedShotSource(ShotSource):
    """A ``ShotSource`` decoding in ``workers`` processes (see module doc): the same shots,
    samples, JPEG bytes, audio features and transitions as ``ShotSource``.

    ``ChunkedShotSource(info, options, workers=N, skip=done, progress=None, stop=None)``:
    ``info`` from ``client.media.probe.probe``, ``options`` the run's ``ExtractOptions``,
    ``skip`` the shot ids already done (resume), ``progress`` a ``client.progress.Progress``
    (its frame count is the frames decoded by every worker), ``stop`` an event that ends the
    run early. ``workers=1`` decodes in one pass in a thread, like ``ShotSource``. Iterate it
    once, and ``close()`` it (a ``Run`` does): that stops and joins every worker process.
    ``scanner.fallback_reason`` says why a film was decoded in one pass, ``scanner.seams``
    where each chunk took over, ``scanner.frames_decoded`` the frames decoded so far.
    """

    def __init__(
        self,
        info: VideoInfo,
        options: ExtractOptions,
        workers: int = 2,
        skip: set[int] | frozenset[int] = frozenset(),
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        queue_size: int = 16,
        borders: list[int] | None = None,
    ) -> None:
        super().__init__(info, options, skip, progress, stop, queue_size)
        self.workers = max(1, workers)
        self.scanner: ChunkedScanner = ChunkedScanner(  # type: ignore[assignment]
            info, options, self.workers, on_frame=self._on_frame, stop=self.stop, borders=borders
        )

    def close(self) -> None:
        """``ShotSource.close``, then every worker process stopped and joined."""
        super().close()
        self.scanner.close()
