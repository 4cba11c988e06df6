"""Turning a shot's base64 video clip into the frames the model sees.

A shot may carry ``video`` (a short clip in any container PyAV reads) instead of ``images``.
The server samples ``frames_per_shot`` frames from it with the client's own rule
(``client.media.frames.sample_positions``, imported: one implementation), so a clip gives the
frames ``qwen-client analyze`` would have sent for the same shot.

Two passes over the in-memory clip, both bounded: a demux-only pass (no decoding) counts the
video packets, one per frame, and measures the stream's length from their timestamps, so the
size, length and frame-rate limits are enforced before a single frame is decoded; then a decode
pass converts only the sampled frames (frames are numbered in presentation order, as the
decoder returns them) and stops after the last one. When the decoder yields fewer frames than
there were packets (packets an MP4 edit list discards, a damaged tail), the positions are
recomputed on the frames that really decode and the decode is redone: ``frame_count`` in the
result is then that count. A clip PyAV cannot open or decode, or one cut short (its
video ends well before the duration its container declares), is an InvalidInput naming the
shot, never a 500. Runs in the decode pool (a worker thread), never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from dataclasses import dataclass
from fractions import Fraction

import av
from PIL import Image

from client.media.frames import sample_positions

from ..contract.analysis import ClipInputs
from ..errors import InvalidInput
from .images import _strip_data_url

log = logging.getLogger("qwen_server.clips")

# A clip whose packets imply more than this many frames per second of its allowed length is
# refused from the demux pass: a few KB of 1x1 frames at 10,000 fps would otherwise make the
# server decode millions of frames.
MAX_CLIP_FPS = 240
# How much shorter than its container's declared duration the video stream may be (an audio
# track running on, rounding) before the clip counts as truncated: this or 10 %, the larger.
TRUNCATION_SLACK_S = 0.5


@dataclass(frozen=True)
class ClipLimits:
    """The configured bounds of one clip (``server.max_clip_mb``, ``max_clip_seconds``,
    ``max_image_pixels``) and the pixels kept per frame (``model.max_pixels``)."""

    max_bytes: int
    max_seconds: float
    max_pixels: int
    keep_pixels: int


def base64_size(data: str) -> int:
    """Upper bound of the decoded size of base64 ``data``, without decoding it."""
    return (len(data) * 3) // 4


def over_size(size: int, limit: int, about: str = "") -> str:
    """The refusal of a clip of ``size`` bytes over ``limit`` bytes, naming the setting."""
    return (
        f"clip is {about}{size:,} bytes, over the limit of {limit:,} bytes "
        f"(server.max_clip_mb = {limit / 1_048_576:.3g})"
    )


def _decode_base64(data: str, limits: ClipLimits, where: str) -> bytes:
    if base64_size(data) > limits.max_bytes + 3:
        raise InvalidInput(f"{where}: {over_size(base64_size(data), limits.max_bytes, 'about ')}")
    try:
        raw = base64.b64decode(_strip_data_url(data), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None
    if not raw:
        raise InvalidInput(f"{where}: empty clip")
    if len(raw) > limits.max_bytes:
        raise InvalidInput(f"{where}: {over_size(len(raw), limits.max_bytes)}")
    return raw


@dataclass(frozen=True)
class _Demuxed:
    container: str
    codec: str
    width: int
    height: int
    packets: int
    seconds: float


def _demux(raw: bytes, limits: ClipLimits, where: str) -> _Demuxed:
    """Count the video packets and measure the stream's length without decoding."""
    max_packets = int(limits.max_seconds * MAX_CLIP_FPS) + 1
    with av.open(io.BytesIO(raw), mode="r") as container:
        if not container.streams.video:
            raise InvalidInput(f"{where}: clip has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            raise InvalidInput(
                f"{where}: clip frames are {width}x{height} = {width * height} pixels, over the "
                f"limit of {limits.max_pixels} (server.max_image_pixels)"
            )
        packets = 0
        first: int | None = None
        last: int | None = None
        last_duration = 0
        for packet in container.demux(stream):
            if not packet.size:  # the demuxer's final flush packet
                continue
            packets += 1
            if packets > max_packets:
                raise InvalidInput(
                    f"{where}: clip has more than {max_packets} frames ({MAX_CLIP_FPS} fps over "
                    f"server.max_clip_seconds = {limits.max_seconds:g})"
                )
            if packet.pts is not None:
                first = packet.pts if first is None else min(first, packet.pts)
                if last is None or packet.pts >= last:
                    last, last_duration = packet.pts, packet.duration or 0
        if packets == 0:
            raise InvalidInput(f"{where}: clip has no video frames")
        base = stream.time_base
        if first is not None and last is not None and base is not None:
            seconds = float((last - first + last_duration) * Fraction(base))
        elif stream.average_rate:
            seconds = float(packets / Fraction(stream.average_rate))
        else:
            seconds = (container.duration or 0) / 1_000_000
        declared = (container.duration or 0) / 1_000_000
        if declared - seconds > max(TRUNCATION_SLACK_S, 0.1 * declared):
            # A cut-off Matroska/WebM still opens and decodes its first part: refused, so a
            # part of the shot is never passed off as the whole.
            raise InvalidInput(
                f"{where}: clip is truncated: its container declares {declared:.2f} s, its video "
                f"holds {seconds:.2f} s"
            )
        return _Demuxed(
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            packets=packets,
            seconds=seconds,
        )


def _to_image(frame: av.VideoFrame, keep_pixels: int) -> Image.Image:
    """The frame as RGB, shrunk (area filter, in swscale) to at most ``keep_pixels``."""
    w, h = frame.width, frame.height
    if w * h > keep_pixels:
        scale = (keep_pixels / (w * h)) ** 0.5
        w, h = max(1, int(w * scale)), max(1, int(h * scale))
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_image()


def _decode_at(
    raw: bytes, positions: list[int], limits: ClipLimits, where: str
) -> tuple[list[Image.Image], int]:
    """The frames at ``positions`` (presentation order, 0-based) and the frames decoded (all of
    them when some position was never reached)."""
    wanted = set(positions)
    stop = max(positions)
    images: list[Image.Image] = []
    decoded = 0
    with av.open(io.BytesIO(raw), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.width * frame.height > limits.max_pixels:  # headers can understate it
                raise InvalidInput(
                    f"{where}: clip frames are {frame.width}x{frame.height}, over the limit of "
                    f"{limits.max_pixels} pixels (server.max_image_pixels)"
                )
            if decoded in wanted:
                images.append(_to_image(frame, limits.keep_pixels))
            decoded += 1
            if decoded > stop:
                break
    return images, decoded


def decode_clip(
    data: str, *, count: int, limits: ClipLimits, where: str
) -> tuple[list[Image.Image], ClipInputs]:
    """The ``count`` sampled RGB frames of base64 clip ``data`` and what was read from it, or
    InvalidInput naming ``where`` (e.g. ``"shot 3 video"``) and the limit at fault."""
    raw = _decode_base64(data, limits, where)
    try:
        info = _demux(raw, limits, where)
        if info.seconds > limits.max_seconds:
            raise InvalidInput(
                f"{where}: clip is {info.seconds:.2f} s long, over the limit of "
                f"{limits.max_seconds:g} s (server.max_clip_seconds)"
            )
        frames_total = info.packets
        positions = sample_positions(0, frames_total - 1, count)
        images, decoded = _decode_at(raw, positions, limits, where)
        if len(images) < len(positions):
            # Fewer frames decode than there were packets: sample the frames that do.
            if decoded == 0:
                raise InvalidInput(f"{where}: no frame of the clip could be decoded")
            log.info("%s: %d of %d packets decoded to frames", where, decoded, frames_total)
            frames_total = decoded
            positions = sample_positions(0, frames_total - 1, count)
            images, _ = _decode_at(raw, positions, limits, where)
    except InvalidInput:
        raise
    except Exception as exc:  # PyAV raises its FFmpegError family, or ValueError, for bad data
        raise InvalidInput(
            f"{where}: clip cannot be decoded ({type(exc).__name__}: not a video PyAV reads)"
        ) from None
    if len(images) < len(positions):
        raise InvalidInput(f"{where}: clip frames could not be decoded consistently")
    return images, ClipInputs(
        container=info.container,
        codec=info.codec,
        width=info.width,
        height=info.height,
        frame_count=frames_total,
        seconds=round(info.seconds, 6),
        positions=positions,
    )
