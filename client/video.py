"""Opening the film and the single decode pass: shot detection and frame sampling together.

``ShotScanner`` decodes the video stream once, front to back (no seeking), with FFmpeg's frame
threading. Each frame is shrunk once for the detector; frames are held back ``CutFinder.delay``
frames (2 for the adaptive detector), so when a frame is committed to the open shot its cut, if
any, is already known. The open shot keeps a bounded set of sample candidates
(``frames.ShotReservoir``); at each cut the shot is closed with its picked frames and yielded, so
shots stream out while decoding goes on and memory does not grow with the film's length.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from client.audio import find_audio_stream
from client.detect import CutFinder, make_detector
from client.errors import FilmNotFound, NoFramesDecoded, NoVideoStream, VideoOpenFailure
from client.frames import (
    Candidate,
    FrameConverter,
    ShotReservoir,
    candidate_capacity,
    output_size,
)
from client.options import ExtractOptions
from client.shot import Shot

log = logging.getLogger("client.video")

MAX_CORRUPT_WARNINGS = 5


@dataclass(frozen=True)
class VideoInfo:
    """What the CLI and the outputs need to know about a film before decoding it."""

    path: Path
    container: str
    codec: str
    width: int
    height: int
    fps: Fraction
    frame_estimate: int | None
    duration: float | None
    has_audio: bool
    audio_codec: str | None

    def as_record(self) -> dict[str, object]:
        """JSON-friendly description for summaries and manifests."""
        return {
            "name": self.path.name,
            "container": self.container,
            "video_codec": self.codec,
            "width": self.width,
            "height": self.height,
            "fps": round(float(self.fps), 6),
            "audio_codec": self.audio_codec,
        }


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open a media file, turning FFmpeg failures into one-line input errors."""
    p = Path(path)
    if not p.exists():
        raise FilmNotFound(f"film not found: {p}")
    if not p.is_file():
        raise FilmNotFound(f"not a file: {p}")
    try:
        return av.open(str(p))
    except av.error.FFmpegError as exc:
        raise VideoOpenFailure(f"cannot open {p.name} as a video: {exc.strerror or exc}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VideoOpenFailure(f"cannot open {p.name} as a video: {exc}") from None


def find_video_stream(
    container: av.container.InputContainer, name: str
) -> av.video.stream.VideoStream:
    """The first real video stream (cover art, i.e. an attached picture, does not count)."""
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise NoVideoStream(f"{name} is a still image, not a video")
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        return stream

    def kind(s: av.stream.Stream) -> str:
        if s.type == "video":  # only attached pictures are left
            return "cover art"
        return s.type

    kinds = sorted({kind(s) for s in container.streams}) or ["nothing"]
    raise NoVideoStream(f"{name} has no video stream (it holds: {', '.join(kinds)})")


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return Fraction(rate.numerator, rate.denominator)
    log.warning("the video stream declares no frame rate; assuming 25 fps")
    return Fraction(25)


def probe(path: str | Path) -> VideoInfo:
    """Check that ``path`` is a usable film and describe it (raises an InputError if not)."""
    p = Path(path)
    with open_container(p) as container:
        stream = find_video_stream(container, p.name)
        fps = _frame_rate(stream)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        frames = stream.frames or (round(duration * float(fps)) if duration else None)
        audio = find_audio_stream(container)
        ctx = stream.codec_context
        return VideoInfo(
            path=p,
            container=container.format.name,
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=fps,
            frame_estimate=frames or None,
            duration=duration,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
        )


@dataclass
class ScannedShot:
    """A closed shot with its sample frames (not yet encoded) and its stream times."""

    shot: Shot
    samples: list[Candidate]
    stream_start: float  # stream time (s) of the shot's first frame, for audio alignment
    stream_end: float


@dataclass
class ScanStats:
    """Counters of one decode pass."""

    frames: int = 0
    corrupt_packets: int = 0
    first_time: float | None = None
    last_frame: int = -1
    stopped_early: bool = False
    errors: list[str] = field(default_factory=list)


class ShotScanner:
    """Iterates over the shots of a film in one decode pass (see module doc).

    ``on_frame(frame_no, stream_time)`` is called for every decoded frame (progress, audio
    pacing); setting ``stop`` ends the pass early at the next packet.
    """

    def __init__(
        self,
        info: VideoInfo,
        options: ExtractOptions,
        on_frame: Callable[[int, float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.info = info
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
                self._corrupt(f"stopped reading the file: {exc}")
                return
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

    def __iter__(self) -> Iterator[ScannedShot]:
        info, fps = self.info, self.info.fps
        container = open_container(info.path)
        try:
            stream = find_video_stream(container, info.path.name)
            stream.thread_type = "AUTO"  # frame + slice threads: decoding is the bottleneck
            finder = CutFinder(make_detector(self.options.detection, fps), fps)
            sampling = self.options.sampling
            reservoir = ShotReservoir(self.capacity, sampling.frames_per_shot)
            held: deque[tuple[int, float, av.VideoFrame]] = deque()
            cuts: deque[int] = deque()
            shot_id = 0
            start: tuple[int, float] | None = None  # (frame_no, stream time) of open shot
            last: tuple[int, float] = (-1, 0.0)
            prev_no = -1

            def commit(frame_no: int, t: float, frame: av.VideoFrame) -> Iterator[ScannedShot]:
                nonlocal start, last, shot_id
                if start is None:
                    start = (frame_no, t)
                    reservoir.reset(frame_no)
                elif cuts and cuts[0] <= frame_no:
                    while cuts and cuts[0] <= frame_no:
                        cuts.popleft()
                    shot_id += 1
                    yield self._close(shot_id, start, last, reservoir)
                    start = (frame_no, t)
                    reservoir.reset(frame_no)
                if reservoir.wants(frame_no):
                    reservoir.add(Candidate(frame_no, frame))
                last = (frame_no, t)

            for frame in self._decoded_frames(container, stream):
                t = float(frame.time) if frame.time is not None else None
                if self.stats.first_time is None:
                    self.stats.first_time = t if t is not None else 0.0
                # Frame numbers follow the timestamps (a skipped corrupt frame leaves a gap
                # instead of shifting every later frame), forced to increase.
                if t is None:
                    frame_no = prev_no + 1
                    t = self.stats.first_time + frame_no / float(fps)
                else:
                    frame_no = max(prev_no + 1, round((t - self.stats.first_time) * fps))
                prev_no = frame_no
                self.stats.frames += 1
                cuts.extend(finder.process(frame_no, self._converter.detection_frame(frame)))
                held.append((frame_no, t, frame))
                while len(held) > finder.delay:
                    yield from commit(*held.popleft())
                if self.on_frame is not None:
                    self.on_frame(frame_no, t)
            if self.stop.is_set():
                return
            cuts.extend(finder.finish())
            while held:
                yield from commit(*held.popleft())
            if start is None:
                raise NoFramesDecoded(f"{info.path.name}: no video frame could be decoded")
            self.stats.last_frame = last[0]
            yield self._close(shot_id + 1, start, last, reservoir)
        finally:
            container.close()

    def _close(
        self,
        shot_id: int,
        start: tuple[int, float],
        last: tuple[int, float],
        reservoir: ShotReservoir,
    ) -> ScannedShot:
        shot = Shot(shot_id=shot_id, start_frame=start[0], end_frame=last[0], fps=self.info.fps)
        frame_dur = 1.0 / float(self.info.fps)
        return ScannedShot(
            shot=shot,
            samples=reservoir.pick(last[0]),
            stream_start=start[1],
            stream_end=last[1] + frame_dur,
        )
