"""The parent's half of a chunked decode: the workers' messages in, the one-pass shots out.

``Stitcher`` keeps, per chunk (``ChunkState``), the sync keys, shots and progress its worker
reported (``client.pipeline.chunk_worker``), and yields the shots in film order: a chunk's own
shots (those starting before the next border), then, once a seam is settled, the next chunk's.
A seam at frame ``f`` needs equal sync keys at ``f`` in both chunks and the very same shot
starting at ``f`` in both (``same_shot``); a seam that does not agree is never taken, the chunk
goes on (see ``client.pipeline.chunked`` for the whole design). Every emitted shot is checked to
follow the one before it (``SeamMismatch`` otherwise, never written).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

from client.errors import ClientError
from client.media.assembly import ScannedShot
from client.media.keyframes import Chunk, FrameIndex
from client.media.probe import VideoInfo
from client.media.scan import ScanStats
from client.media.seams import SyncKey

log = logging.getLogger("client.pipeline")


class SeamMismatch(ClientError):
    """Stitched shots that do not follow each other (a bug: never written)."""


@dataclass
class ChunkState:
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


def same_shot(a: ScannedShot, b: ScannedShot) -> bool:
    """Two passes' versions of one shot, ids aside: frames, times, transition fields, samples."""
    return (
        replace(a.shot, shot_id=0) == replace(b.shot, shot_id=0)
        and a.shot.marks == b.shot.marks
        and [(c.frame_no, c.frame) for c in a.samples] == [(c.frame_no, c.frame) for c in b.samples]
        and (a.stream_start, a.stream_end) == (b.stream_start, b.stream_end)
    )


class Stitcher:
    """Messages in (``handle``), shots out (``run``); see module doc."""

    def __init__(
        self,
        info: VideoInfo,
        plan: list[Chunk],
        states: list[ChunkState],
        on_frame: Callable[[int, float], None] | None,
        stop: threading.Event,
    ) -> None:
        self.info = info
        self.plan = plan
        self._states = states
        self.on_frame = on_frame
        self.stop = stop
        self.stats = ScanStats()
        self.seams: list[dict[str, int]] = []  # where each chunk took over
        self.frames_decoded = 0  # by every worker together (warm-ups and overruns included)
        self._last_id = 0
        self._last_end = -1
        self.bounds: list[tuple[int, int]] = []  # (start, end) of every shot emitted
        self._audio_time = 0.0  # stream end of the last emitted shot (audio pacing)

    @property
    def emitted(self) -> int:
        """Shots emitted so far."""
        return self._last_id

    def check_workers(self) -> None:
        """A worker that died without a last word failed."""
        for state in self._states:
            proc = state.process
            if not state.ended and state.failed is None and not proc.is_alive():
                state.failed = f"worker exited with code {proc.exitcode}"

    def handle(self, msg: tuple[Any, ...]) -> None:
        """One message of a worker (see ``client.pipeline.chunk_worker``)."""
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
    def _emit(self, state: ChunkState, scanned: ScannedShot) -> ScannedShot:
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
        self.bounds.append((shot.start_frame, shot.end_frame))
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

    def run(
        self, index: FrameIndex, origin: float, receive: Callable[[], None]
    ) -> Generator[ScannedShot, None, str | None]:
        """Generator of the stitched shots (``receive`` waits a little for the next message);
        returns why the one pass must be redone (None when the chunks covered the film)."""
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
                self._finish(st, index, origin)
                return None
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
                        if mine.shot.start_frame == f == theirs.shot.start_frame and same_shot(
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
            receive()

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

    def _finish(self, st: ChunkState, index: FrameIndex, origin: float) -> None:
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
