"""The single decode pass: shot detection and frame sampling together.

``ShotScanner`` decodes the video stream once, front to back (no seeking), with FFmpeg's slice
threading (deterministic even on damaged files, see ``ShotScanner.__iter__``); corrupt packets and
frames that could not be decoded are counted in ``ScanStats`` (``client.media.scan_stats``). Each
frame is shrunk once for the detector and analysed on a worker thread a few frames behind the
decoder (``client.media.frame_analysis``: decoding and analysis overlap; what is done with the
results stays in the decode thread, in frame order); frames are held back ``ScanStats.hold_frames``
frames (the detector's delay, 2 for the adaptive detector, or the transition finder's lookahead,
~22 at 25 fps, when longer), so when a frame is committed to the open shot its cut, if any, is
already known. The open shot keeps a bounded set of sample candidates
(``client.media.frames.ShotReservoir``); shots are closed with their picked frames and yielded
while decoding goes on, so they stream out and memory does not grow with the film's length.

Transitions (``DetectionOptions.transitions``): a ``TransitionFinder`` is fed the same small
pictures; frames are then held back its ``lookahead`` (about half the longest dissolve) before
being committed, so ``BoundaryPlanner`` (``client.media.boundaries``) knows, for each frame, if a
shot starts there: one boundary per dissolve, fade or black, detector cuts outside them as they
are. Holding frames back changes no decision about hard cuts, so a film without transitions
gives the very shots it gave without a finder; it costs ``lookahead`` decoded frames of memory
(22 frames at 25 fps, about 70 MB at 1080p), never more frames than the sample candidates'
budget allows (``capacity``: 40 at 1080p, 10 at 4K). Closed shots wait (only their few
converted samples) until the finder has settled past their end, then get their transition
fields (``Shot.marks``) and are yielded.

Minimum shot length: PySceneDetect keeps ``min_scene_len`` between cuts but not for the film's
last shot (noise can report a cut a few frames before the end). ``ShotAssembler``
(``client.media.assembly``) enforces the minimum for every shot: a cut closer than the minimum
to the open shot's start is dropped, and a shot is only closed once ``min_frames`` frames of the
next shot have been committed (or the film ends). If the film ends first, the short last shot is
merged into the held shot, whose samples come from a copy of its reservoir that kept taking the
new shot's frames, so they stay evenly spread over the merged shot. The hold costs
``min_frames`` frames of latency and, at most, a second shot's candidates in memory.

A time range (``ExtractOptions.range``) still decodes from frame 0, yields only the shots that
overlap it, clipped to it, and ends the pass ``min_frames`` frames after the range
(``client.media.clip`` says why no seek); ``ScanStats.range_stopped`` then says the pass ended
there on purpose.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace

import av

from client.errors import InputError, NoFramesDecoded
from client.media.assembly import ScannedShot, ShotAssembler
from client.media.boundaries import BoundaryPlanner, ShotEdges
from client.media.clip import RangeClipper
from client.media.detection import CutFinder, make_detector, min_shot_frames
from client.media.frame_analysis import (
    PIPELINE_LAG,
    AnalysisPipeline,
    FrameAnalyser,
    FrameAnalysis,
)
from client.media.frames import Candidate, FrameConverter, candidate_capacity, output_size
from client.media.probe import (
    VideoInfo,
    discard_other_streams,
    find_video_stream,
    open_container,
)
from client.media.scan_stats import ScanStats
from client.media.seams import DecodeWindow, sync_key
from client.media.transitions import TransitionFinder
from client.options import ExtractOptions, TimeRange

__all__ = ["ScanStats", "ShotScanner"]

log = logging.getLogger("client.media.scan")

MAX_CORRUPT_WARNINGS = 5


class ShotScanner:
    """Iterates over the shots of a film in one decode pass (see module doc).

    ``on_frame(frame_no, stream_time)`` is called for every decoded frame (progress, audio
    pacing); setting ``stop`` ends the pass early at the next packet. ``window`` (a chunk
    worker's, ``client.media.seams``): start at a keyframe, number frames from the film's index,
    report each shot start's sync key; None is the one pass from frame 0.
    """

    def __init__(
        self,
        info: VideoInfo,
        options: ExtractOptions,
        on_frame: Callable[[int, float], None] | None = None,
        stop: threading.Event | None = None,
        window: DecodeWindow | None = None,
    ) -> None:
        self.info = info
        self.window = window
        self.options = options
        self.on_frame = on_frame
        self.stop = stop or threading.Event()
        self.stats = ScanStats()
        sampling = options.sampling
        self.output_size = output_size(info.width, info.height, sampling.max_side, sampling.snap)
        self._converter = FrameConverter(info.width, info.height, options.detection.detect_width)
        self.capacity = candidate_capacity(
            info.width,
            info.height,
            sampling.candidates,
            sampling.frames_per_shot,
            sampling.candidate_memory_mb << 20,
        )
        self._planner = BoundaryPlanner(None, info.fps)
        self._waiting: deque[tuple[ScannedShot, ShotEdges]] = deque()
        self._closed_until = 0  # the frame after the last shot the assembler closed

    def _decoded_frames(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames in order; corrupt packets are skipped with a warning."""
        packets = container.demux(stream)
        while not self.stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self.stats.read_stopped = True
                self._corrupt(f"stopped reading the file: {exc}")
                return
            if packet.size:
                self.stats.packets += 1
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                where = (
                    f" at {float(packet.pts * packet.time_base):.2f} s"
                    if packet.pts is not None and packet.time_base
                    else ""
                )
                self._corrupt(f"skipped a corrupt packet{where}: {exc}")
                continue
            yield from frames
        self.stats.stopped_early = True

    def _corrupt(self, message: str) -> None:
        self.stats.corrupt_packets += 1
        self.stats.errors.append(message)
        if self.stats.corrupt_packets <= MAX_CORRUPT_WARNINGS:
            log.warning("%s: %s", self.info.path.name, message)
        elif self.stats.corrupt_packets == MAX_CORRUPT_WARNINGS + 1:
            log.warning(
                "%s: more corrupt packets; further warnings suppressed", self.info.path.name
            )

    def _detach(self, scanned: ScannedShot) -> ScannedShot:
        """The shot with its samples converted, here in the decode thread, to BGR pictures at
        the output size that own their memory.

        The decoder's own frames must not outlive a lifetime fixed by this thread: on a
        damaged stream FFmpeg conceals a missing reference with whatever a recycled pool
        buffer holds, so if worker threads kept decoded frames for as long as encoding takes,
        later pictures (and the cuts found in them) would change from run to run. Converting
        the few picked frames costs little next to decoding the shot.
        """
        w, h = self.output_size
        samples = [
            Candidate(
                c.frame_no,
                c.frame.reformat(width=w, height=h, format="bgr24", interpolation="AREA"),
            )
            for c in scanned.samples
        ]
        return ScannedShot(scanned.shot, samples, scanned.stream_start, scanned.stream_end)

    def _commit(
        self,
        shots: ShotAssembler,
        clip: RangeClipper | None,
        frame_no: int,
        t: float,
        frame: av.VideoFrame,
    ) -> None:
        """Commit one frame to the assembler (and the clipper, with a range); the shot it
        closed, if any (clipped to the range; nothing when it lies outside), waits in
        ``_waiting`` for its transition fields."""
        planner = self._planner
        if planner.starts_shot(frame_no):
            shots.add_cuts([frame_no])
        before = shots.closed
        closed = shots.commit(frame_no, t, frame)
        planner.committed(frame_no, shots.open_start == frame_no)
        window = self.window
        if window is not None and window.on_boundary is not None and shots.open_start == frame_no:
            window.on_boundary(frame_no, sync_key(self, frame_no))
        if clip is None:
            for scanned in closed:
                self._wait(scanned, scanned, final=False)
            return
        clip.commit(frame_no, t, frame, cut=shots.closed > before, open_id=shots.closed + 1)
        for scanned in closed:
            clipped = clip.closed(scanned)
            self._closed_until = scanned.shot.end_frame + 1
            if clipped is not None:
                self._wait(clipped, scanned, final=False)

    def _wait(self, shot: ScannedShot, whole: ScannedShot | None, final: bool) -> None:
        """Queue a closed (maybe clipped) shot; ``whole``: the assembler's shot it is part of
        (None: the range's tail), ``final``: the film's last."""
        s = shot.shot
        edges = ShotEdges(
            # A shot starting where no boundary was committed starts at the range's start.
            film_start=s.start_frame == 0 or not self._planner.is_boundary(s.start_frame),
            film_end=final or whole is None or whole.shot.end_frame != s.end_frame,
        )
        self._closed_until = max(self._closed_until, s.end_frame + 1)
        self._waiting.append((self._detach(shot), edges))

    def _release(self, settled: float) -> Iterator[ScannedShot]:
        """Yield the waiting shots whose transitions are final (all of them: ``math.inf``)."""
        planner = self._planner
        while self._waiting and self._waiting[0][0].shot.end_frame + 2 <= settled:
            scanned, edges = self._waiting.popleft()
            marks = planner.describe(scanned.shot, edges)
            yield replace(scanned, shot=replace(scanned.shot, marks=marks))
        oldest = self._waiting[0][0].shot.start_frame if self._waiting else self._closed_until
        planner.forget_before(min(oldest, self._closed_until))

    def __iter__(self) -> Iterator[ScannedShot]:
        info, fps = self.info, self.info.fps
        container = open_container(info.path)
        try:
            stream = find_video_stream(container, info.path.name)
            # Slice threads only, never frame threads: on a damaged stream FFmpeg's frame
            # threading conceals errors from frames that other threads are still decoding, so
            # the same file gave different pictures (and shot lists: 11-13 shots) from run to
            # run. Resume relies on the same shots every time; slice threading is
            # deterministic, and intact films decode to the same frames either way. (The other
            # half of determinism on damaged files is in _detach.)
            stream.thread_type = "SLICE"
            discard_other_streams(container, stream)
            window = self.window
            if window is not None:
                window.seek(container, stream)
            origin = window.origin if window is not None else None
            self.stats.declared_frames = stream.frames or None
            if info.duration:
                self.stats.duration_frames = round(info.duration * fps)
            detection = self.options.detection
            finder = CutFinder(make_detector(detection, fps), fps)
            transitions = None
            if detection.transitions:
                transitions = TransitionFinder(
                    fps,
                    detection.black_luma,
                    detection.black_min_frames,
                    detection.dissolve_max_seconds,
                )
            planner = self._planner = BoundaryPlanner(transitions, fps, origin)
            self._waiting.clear()
            self._closed_until = 0
            # Held frames cost memory like sample candidates: at most ``capacity`` of them
            # (40 at 1080p, 10 at 4K); a shorter hold only places long dissolves' boundaries
            # later inside them.
            lookahead = min(transitions.lookahead, self.capacity) if transitions else 0
            hold = self.stats.hold_frames = max(finder.delay, lookahead)
            sampling = self.options.sampling
            shots = ShotAssembler(
                fps,
                self.capacity,
                sampling.frames_per_shot,
                min_shot_frames(detection, fps),
                usable=planner.usable if transitions is not None else None,
                origin=origin,
            )
            # Seen by the sync key (client.media.seams) of a chunk worker's pass.
            self._cut_finder, self._transitions, self._assembler = finder, transitions, shots
            span = self.options.range
            clip = None
            if span is not None:
                clip = RangeClipper(
                    span, fps, self.capacity, sampling.frames_per_shot, shots.min_frames
                )
            held: deque[tuple[int, float, av.VideoFrame]] = deque()
            self._held_frames = held
            prev_t: float | None = None
            nominal = 1.0 / float(fps)
            # The analysis trails the decoder on its own thread (client.media.frame_analysis),
            # except where a step needs the analysers' state at exactly its frame: a range's
            # end closes the transition finder there, a chunk worker reads sync keys.
            lag = 0 if span is not None or window is not None else PIPELINE_LAG
            analysis = AnalysisPipeline(FrameAnalyser(self._converter, finder, transitions), lag)
            pending: deque[tuple[int, float, av.VideoFrame]] = deque()
            step = _Step(self, shots, clip, held, hold)
            decoded = 0
            try:
                for frame in self._decoded_frames(container, stream):
                    # Frame numbers are the decoded frame index (see client.media.shot); times
                    # are the frames' timestamps, kept increasing (a frame without one, or with
                    # one that goes back, is placed one nominal frame after the previous).
                    frame_no = decoded if window is None else window.number(frame)
                    decoded += 1
                    t = float(frame.time) if frame.time is not None else None
                    if prev_t is None:
                        t = t if t is not None else 0.0
                        self.stats.first_time = t
                    elif t is None or t <= prev_t:
                        t = prev_t + nominal
                    prev_t = t
                    analysis.submit(frame_no, frame)
                    pending.append((frame_no, t, frame))
                    while len(pending) > lag:
                        yield from step.run(*pending.popleft(), analysis.result())
                        if step.range_done:
                            return
                if self.stop.is_set():
                    return
                while pending:
                    yield from step.run(*pending.popleft(), analysis.result())
                    if step.range_done:
                        return
            finally:
                analysis.close()
            if self.stop.is_set():
                return
            planner.add_cuts(finder.finish())
            if transitions is not None:
                planner.add_groups(transitions.finish())
            while held:
                self._commit(shots, clip, *held.popleft())
            last = shots.finish()
            if last is None:
                raise NoFramesDecoded(f"{info.path.name}: no video frame could be decoded")
            self.stats.last_frame = last.shot.end_frame
            if clip is not None:
                clipped = clip.closed(last, final=True)
                if clip.first is None:
                    raise InputError(f"{info.path.name}: no frame lies in {_describe(span)}")
                if clipped is not None:
                    self._wait(clipped, last, final=True)
            else:
                self._wait(last, last, final=True)
            yield from self._release(math.inf)
        finally:
            container.close()


class _Step:
    """The scanner's work for one analysed frame, in the decode thread (see ``__iter__``):
    the analysis results to the planner, the frame held back, older frames committed to
    shots, settled shots yielded. ``range_done``: the pass reached its time range's end."""

    def __init__(
        self,
        scanner: ShotScanner,
        shots: ShotAssembler,
        clip: RangeClipper | None,
        held: deque[tuple[int, float, av.VideoFrame]],
        hold: int,
    ) -> None:
        self.scanner = scanner
        self.shots = shots
        self.clip = clip
        self.held = held
        self.hold = hold
        self.range_done = False

    def run(
        self, frame_no: int, t: float, frame: av.VideoFrame, found: FrameAnalysis
    ) -> Iterator[ScannedShot]:
        scanner = self.scanner
        planner, transitions, held = scanner._planner, scanner._transitions, self.held
        scanner.stats.frames += 1
        planner.add_cuts(found.cuts)
        planner.frame_time(frame_no, t)
        if transitions is not None:
            planner.add_groups(found.groups)
        held.append((frame_no, t, frame))
        while len(held) > self.hold:
            scanner._commit(self.shots, self.clip, *held.popleft())
        yield from scanner._release(found.settled)
        if scanner.on_frame is not None:
            scanner.on_frame(frame_no, t)
        clip = self.clip
        if clip is not None and clip.done:
            tail = clip.tail()
            if tail is not None:
                scanner._wait(tail, None, final=True)
            if transitions is not None:
                planner.add_groups(transitions.finish())
            yield from scanner._release(math.inf)
            scanner.stats.range_stopped = True
            scanner.stats.last_frame = clip.last[0] if clip.last is not None else -1
            self.range_done = True


def _describe(span: TimeRange | None) -> str:
    """``--start S --end E`` of a time range, for messages."""
    if span is None:
        return "the film"
    return f"--start {span.start:g}" + (f" --end {span.end:g}" if span.end is not None else "")
