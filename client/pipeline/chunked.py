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
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from client.media.assembly import ScannedShot
from client.media.keyframes import Chunk, FrameIndex, build_index, chunks_from_borders, plan_chunks
from client.media.probe import VideoInfo, open_container
from client.media.scan import ShotScanner
from client.media.seams import warm_frames
from client.options import ExtractOptions
from client.pipeline.chunk_worker import ChunkJob, run_chunk
from client.pipeline.source import ShotSource
from client.pipeline.stitch import ChunkState, SeamMismatch, Stitcher
from client.progress import Progress

log = logging.getLogger("client.pipeline")

JOIN_SECONDS = 3.0


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
        one_pass_here: bool = True,
    ) -> None:
        self.info = info
        # False: a film decoded in one chunk (one worker, or too short to split) is still
        # decoded in a worker process (a server job: decoding never runs in the server).
        self.one_pass_here = one_pass_here
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
        self._states: list[ChunkState] = []
        self._stitcher: Stitcher | None = None
        self._queue: Any = None
        self._last_end = -1
        self._closed = False

    # --- plan -----------------------------------------------------------------------------------
    def _why_not(self) -> str | None:
        if self.workers <= 1 and self.one_pass_here:
            return "one worker"
        if multiprocessing.current_process().daemon:
            return "this process is a daemonic process, which may not start decode processes"
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
            elif self.workers <= 1:
                plan = chunks_from_borders(index, [], warm)  # the whole film, one process
            else:
                # A chunk decodes on past its end to the first shot start there, and the
                # shot after it (the seam check): about 3 s of a film cut every few seconds.
                plan = plan_chunks(index, self.workers, warm, round(3 * float(self.info.fps)))
            if len(plan) < 2 and not self.one_pass_here:
                plan = chunks_from_borders(index, [], warm)
            elif len(plan) < 2:
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
            stitcher = self._stitcher = Stitcher(
                self.info, plan, self._states, self.on_frame, self.stop
            )
            redo = yield from stitcher.run(index, origin, self._receive)
            self.stats = stitcher.stats
        finally:
            self.close()
        if redo is not None:
            self.fallback_reason = redo
            log.warning(
                "%s: %s; decoding again in one pass from the start (the %d shots already "
                "found are checked, not repeated)",
                self.info.path.name,
                redo,
                self._stitcher.emitted if self._stitcher is not None else 0,
            )
            yield from self._one_pass()

    def _one_pass(self) -> Iterator[ScannedShot]:
        """The film in one pass, in this process; shots already emitted are checked, skipped."""
        scanner = ShotScanner(self.info, self.options, on_frame=self.on_frame, stop=self.stop)
        self._one = scanner
        self.stats = scanner.stats
        bounds = self._stitcher.bounds if self._stitcher is not None else []
        done = len(bounds)
        for scanned in scanner:
            shot = scanned.shot
            if shot.shot_id <= done:
                if bounds[shot.shot_id - 1] != (shot.start_frame, shot.end_frame):
                    raise SeamMismatch(
                        f"{self.info.path.name}: the one-pass decode gives shot {shot.shot_id} "
                        f"frames {shot.start_frame}-{shot.end_frame}, the chunked decode gave "
                        f"{bounds[shot.shot_id - 1]}"
                    )
                continue
            yield scanned

    def _start_workers(
        self, index: FrameIndex, plan: list[Chunk], warm: int, origin: float
    ) -> None:
        ctx: Any = multiprocessing.get_context(self.context)
        self._queue = ctx.Queue()
        for chunk in plan:
            state = ChunkState(chunk, stop=ctx.Event())
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
    @property
    def seams(self) -> list[dict[str, int]]:
        """Where each chunk took over: ``{"chunk", "border", "frame"}``."""
        return self._stitcher.seams if self._stitcher is not None else []

    @property
    def frames_decoded(self) -> int:
        """Frames decoded by every worker together (warm-ups and overruns included)."""
        return self._stitcher.frames_decoded if self._stitcher is not None else 0

    @property
    def decoded_per_chunk(self) -> list[int]:
        """Frames each chunk's worker decoded (from its keyframe to where it stopped)."""
        return [max(0, s.frontier + 1 - s.chunk.seek) for s in self._states]

    def _receive(self) -> None:
        """Hand the next worker message to the stitcher (waits at most 0.2 s for one)."""
        assert self._stitcher is not None
        try:
            msg = self._queue.get(timeout=0.2)
        except queue.Empty:
            self._stitcher.check_workers()
            return
        self._stitcher.handle(msg)

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
    run early. ``workers=1`` decodes in one pass in a thread, like ``ShotSource``, unless
    ``one_pass_here`` is False: then a film decoded in one chunk (one worker, or too short to
    split) is decoded in one worker process all the same (server jobs). Iterate it
    once, and ``close()`` it (a ``Run`` does): that stops and joins every worker process.
    Use it in a main or non-daemonic process (a daemonic ``multiprocessing`` process may not
    start processes: the film is then decoded in one pass, and ``fallback_reason`` says so).
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
        one_pass_here: bool = True,
    ) -> None:
        super().__init__(info, options, skip, progress, stop, queue_size)
        self.workers = max(1, workers)
        self.scanner: ChunkedScanner = ChunkedScanner(  # type: ignore[assignment]
            info,
            options,
            self.workers,
            on_frame=self._on_frame,
            stop=self.stop,
            borders=borders,
            one_pass_here=one_pass_here,
        )

    def close(self) -> None:
        """``ShotSource.close``, then every worker process stopped and joined."""
        super().close()
        self.scanner.close()
