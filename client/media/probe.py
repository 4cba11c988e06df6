"""Opening a film and describing it before decoding: container, video stream, frame rate,
duration and whether it has audio. Failures are one-line ``InputError``s."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from client.errors import FilmNotFound, NoVideoStream, VideoOpenFailure
from client.media.audio import find_audio_stream
from client.media.smpte import is_drop_frame

log = logging.getLogger("client.media.probe")


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

    def source_record(self) -> dict[str, object]:
        """Where the film is and how to count its frames, for exports (run.json ``source``,
        summary.json ``film``): absolute path, exact rate as ``"num/den"`` and as a float,
        picture size, and whether its SMPTE timecodes are drop-frame."""
        return {
            "path": str(self.path.resolve()),
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "fps_float": float(self.fps),
            "width": self.width,
            "height": self.height,
            "drop_frame": is_drop_frame(self.fps),
        }

    def summary_record(self) -> dict[str, object]:
        """summary.json's ``film`` block: ``as_record`` with the ``source_record`` fields (its
        ``fps`` is the exact ``"num/den"``, ``fps_float`` the float)."""
        return {**self.as_record(), **self.source_record()}


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


def discard_other_streams(container: av.container.InputContainer, keep: av.stream.Stream) -> None:
    """Have the demuxer skip every stream but ``keep``: the audio pass then never reads the
    video's packets (MP4 and MOV do not even read their bytes; 143 MB for a minute of grainy
    1080p), and the video pass not the audio's."""
    for other in container.streams:
        if other.index != keep.index:
            other.discard = av.stream.Discard.all


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
