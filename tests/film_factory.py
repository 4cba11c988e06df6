"""Generate small test films with PyAV whose ground truth (cut frames, audio content) is known.

Any test can build a film with hard cuts at known frames, dark and bright shots, and per-shot
audio that is a pure tone, white noise or silence::

    truth = make_film(tmp_path / "film.mp4", [
        ShotSpec(frames=40, brightness=0.8, pattern="bars", audio="tone", tone_hz=440),
        ShotSpec(frames=30, brightness=0.1, pattern="checker", audio="noise"),
        ShotSpec(frames=50, brightness=0.5, pattern="circles", audio="silence"),
    ])
    truth.cut_frames   # [40, 70]: first frame of every shot after the first

The container follows the file suffix (.mp4, .mkv, .webm, .ogg, .mov); codecs default to
H.264 + AAC and can be changed (e.g. ``audio_codec="libopus"`` for .webm/.mkv, ``"flac"``,
``"libmp3lame"``, ``"vorbis"``). Frames are drawn with numpy only; each shot has its own colour,
texture and a slow drift so that consecutive frames inside a shot differ a little (like real
footage) while a cut changes everything at once.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.film_damage import corrupt_bytes, corrupt_stream_packets
from tests.film_joins import Join, TransitionTruth, is_cut, write_join

__all__ = [
    "Join",
    "ShotSpec",
    "FilmTruth",
    "TransitionTruth",
    "corrupt_bytes",
    "corrupt_stream_packets",
    "make_film",
    "standard_shots",
]

PATTERNS: tuple[str, ...] = ("flat", "bars", "checker", "noise", "gradient", "circles")
AUDIO_KINDS: tuple[str, ...] = ("tone", "noise", "silence")


@dataclass(frozen=True)
class ShotSpec:
    """One shot of a generated film.

    Attributes:
        frames: length of the shot in frames (>= 1).
        brightness: mean level of the picture, 0 (black) .. 1 (white).
        pattern: texture, one of ``PATTERNS``.
        hue: colour of the shot in [0, 1); None picks a distinct hue from the shot's index.
        audio: ``"tone"``, ``"noise"``, ``"silence"`` or None (= silence in a film that has
            audio; a film where every shot has None gets no audio stream at all).
        tone_hz: frequency of the tone when ``audio == "tone"``.
        amplitude: peak amplitude of tone / noise (full scale = 1).
        drift: pixels per frame the texture moves (0 = a still picture).
        frame_seconds: how long each frame of this shot lasts; None is ``1 / fps``. Any shot
            with its own value makes a variable-frame-rate film (timestamps in 1/90000 s).
    """

    frames: int
    brightness: float = 0.5
    pattern: str = "bars"
    hue: float | None = None
    audio: str | None = "tone"
    tone_hz: float = 440.0
    amplitude: float = 0.5
    drift: float = 1.0
    frame_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError("a shot needs at least one frame")
        if self.frame_seconds is not None and not self.frame_seconds > 0:
            raise ValueError("frame_seconds must be > 0")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, not {self.pattern!r}")
        if self.audio is not None and self.audio not in AUDIO_KINDS:
            raise ValueError(f"audio must be one of {AUDIO_KINDS} or None, not {self.audio!r}")


@dataclass(frozen=True)
class FilmTruth:
    """What a generated film contains, for assertions.

    ``shot_ranges`` are (first frame, last frame) inclusive; ``cut_frames`` are the first frames
    of shots 2..n. ``shot_times`` are each shot's (start, end) in seconds: ``frame / fps`` for
    a constant-frame-rate film, the frames' real timestamps for a variable-frame-rate one.
    With ``joins``, a shot's range and times are its own frames (transition frames excluded),
    ``cut_frames`` lists the hard cuts only, and ``transitions`` every join in film order (a
    fade as fade_out, black and fade_in entries, each only when it has frames).
    """

    path: Path
    fps: int | Fraction
    size: tuple[int, int]
    shots: tuple[ShotSpec, ...]
    shot_ranges: tuple[tuple[int, int], ...]
    cut_frames: tuple[int, ...]
    frame_count: int
    sample_rate: int | None
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    extra: dict[str, object] = field(default_factory=dict)
    shot_times: tuple[tuple[float, float], ...] = ()
    transitions: tuple[TransitionTruth, ...] = ()

    @property
    def variable_frame_rate(self) -> bool:
        """Whether some shot sets its own frame duration."""
        return any(s.frame_seconds is not None for s in self.shots)

    @property
    def duration(self) -> float:
        """Length of the film in seconds."""
        if self.shot_times:
            return self.shot_times[-1][1]
        return float(self.frame_count / self.fps)

    @property
    def cut_times(self) -> tuple[float, ...]:
        """Cut positions in seconds."""
        return tuple(self.shot_seconds(i)[0] for i in range(1, len(self.shots)))

    def shot_seconds(self, index: int) -> tuple[float, float]:
        """(start, end) of shot ``index`` (0-based) in seconds, end exclusive."""
        if self.shot_times:
            return self.shot_times[index]
        first, last = self.shot_ranges[index]
        return float(first / self.fps), float((last + 1) / self.fps)


def _shot_texture(spec: ShotSpec, index: int, width: int, height: int, seed: int) -> np.ndarray:
    """An RGB float texture in [0, 1] somewhat larger than the frame, so it can drift."""
    rng = np.random.default_rng(seed * 7919 + index)
    pad = 64
    h, w = height + pad, width + pad
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = 24 + 16 * (index % 5)
    if spec.pattern == "flat":
        lum = np.full((h, w), 0.5, np.float32)
    elif spec.pattern == "bars":
        lum = 0.5 + 0.5 * np.sin(2 * math.pi * xx / (2 * period))
    elif spec.pattern == "checker":
        wave = np.sin(math.pi * xx / period) * np.sin(math.pi * yy / period)
        lum = 0.5 + 0.5 * np.tanh(3.0 * wave)  # a checkerboard with soft edges
    elif spec.pattern == "noise":
        small = rng.random((h // 8 + 1, w // 8 + 1)).astype(np.float32)
        lum = np.kron(small, np.ones((8, 8), np.float32))[:h, :w]
    elif spec.pattern == "gradient":
        lum = (xx / w * 0.7 + yy / h * 0.3).astype(np.float32)
    else:  # circles
        cx, cy = w / 2 + rng.uniform(-w / 6, w / 6), h / 2 + rng.uniform(-h / 6, h / 6)
        r = np.hypot(xx - cx, yy - cy)
        lum = 0.5 + 0.5 * np.sin(2 * math.pi * r / (1.5 * period))
    hue = spec.hue if spec.hue is not None else (index * 0.618034) % 1.0
    rgb = np.array(colorsys.hsv_to_rgb(hue, 0.65, 1.0), np.float32)
    # Contrast scales with the level so dark shots stay dark (and bright ones bright).
    level = float(np.clip(spec.brightness, 0.0, 1.0))
    contrast = 0.6 * min(level, 1.0 - level) + 0.05
    img = level + contrast * (lum[..., None] - 0.5) * 2.0
    tint = 0.75 + 0.25 * rgb  # keep the colour subtle so brightness stays what was asked
    return np.clip(img * tint / tint.mean(), 0.0, 1.0).astype(np.float32)


def _shot_audio(
    spec: ShotSpec, n: int, start: int, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Mono float32 samples of one shot (phase continuous across the film for tones)."""
    if spec.audio == "tone":
        t = (np.arange(n) + start) / sr
        return (spec.amplitude * np.sin(2 * math.pi * spec.tone_hz * t)).astype(np.float32)
    if spec.audio == "noise":
        return (spec.amplitude * rng.uniform(-1.0, 1.0, n)).astype(np.float32)
    return np.zeros(n, np.float32)


def _audio_format_for(codec: str) -> str:
    return {
        "aac": "fltp",
        "libopus": "flt",
        "opus": "flt",
        "flac": "s16",
        "libmp3lame": "fltp",
        "mp3": "fltp",
        "vorbis": "fltp",
        "libvorbis": "fltp",
        "pcm_s16le": "s16",
    }.get(codec, "fltp")


def make_film(
    path: str | Path,
    shots: Sequence[ShotSpec],
    *,
    fps: int | Fraction = 25,
    size: tuple[int, int] = (320, 240),
    sample_rate: int = 44100,
    channels: int = 2,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    gop: int = 50,
    crf: int = 18,
    preset: str = "veryfast",
    seed: int = 0,
    grain: int = 0,
    joins: Sequence[Join | None] | None = None,
    keyframes: Sequence[int] = (),
    scenecut: bool = True,
    one_slice: bool = False,
) -> FilmTruth:
    """Write a film with the given shots and return its ground truth.

    Hard cuts fall exactly on the first frame of every shot after the first. ``gop`` is the
    keyframe interval (raise it for film-like encodes). ``grain`` adds per-frame noise of that
    many levels (0-255 scale) for a film-like bitrate. Audio is written in the same container
    when any shot has audio. ``fps`` is an int or an exact ``Fraction`` (e.g.
    ``Fraction(30000, 1001)`` for NTSC 29.97: the video time base is then 1001/30000 s).
    ``joins[i]`` says how shot ``i + 1`` follows shot ``i`` (``Join``: dissolve, fade through
    black; None or missing: a hard cut); their frames are added between the shots.
    ``keyframes``: frame numbers forced to be IDR keyframes (libx264); ``scenecut`` False
    keeps the encoder from adding keyframes at cuts (then the keyframes are every ``gop``
    frames and ``keyframes``, exactly). ``one_slice``: one slice per frame (x264 frame
    threads), as the x264 and FFmpeg command lines encode by default; PyAV's default encoder
    threading is slice threads, whose several slices per frame let FFmpeg decode one frame on
    several cores (like Blu-ray's four slices).
    """
    path = Path(path)
    if isinstance(fps, Fraction) and fps.denominator == 1:
        fps = int(fps)
    if not shots:
        raise ValueError("a film needs at least one shot")
    width, height = size
    if width % 2 or height % 2:
        raise ValueError("width and height must be even for yuv420p")
    has_audio = any(s.audio is not None for s in shots)
    rng = np.random.default_rng(seed)
    # Film grain: a few precomputed noise fields cycled frame to frame. It makes the encoder
    # spend bits like on real footage (a realistic bitrate and decoding cost for benchmarks).
    grains = (
        [rng.integers(-grain, grain + 1, (height, width, 1), dtype=np.int16) for _ in range(5)]
        if grain
        else []
    )

    vfr = any(s.frame_seconds is not None for s in shots)
    tick = Fraction(1, 90000) if vfr else Fraction(1, fps)  # video time base
    container = av.open(str(path), mode="w")
    vstream = container.add_stream(video_codec, rate=fps)
    vstream.width, vstream.height = width, height
    vstream.pix_fmt = "yuv420p"
    vstream.time_base = tick
    if vfr:
        vstream.codec_context.time_base = tick
    vstream.codec_context.gop_size = gop
    if video_codec == "libx264":
        vstream.options = {"crf": str(crf), "preset": preset, "bf": "0"}
        if keyframes:
            vstream.options["forced-idr"] = "1"
        params = [f"keyint={gop}:min-keyint={gop}:scenecut=0"] if not scenecut else []
        if one_slice:
            params.append("sliced-threads=0")
        if params:
            vstream.options["x264-params"] = ":".join(params)
    forced = set(keyframes)
    astream = None
    if has_audio:
        astream = container.add_stream(audio_codec, rate=sample_rate)
        astream.layout = "stereo" if channels == 2 else "mono"
        astream.format = _audio_format_for(audio_codec)
        astream.time_base = Fraction(1, sample_rate)
        if audio_codec == "vorbis":  # FFmpeg's native Vorbis encoder is flagged experimental
            astream.codec_context.options = {"strict": "experimental"}

    ranges: list[tuple[int, int]] = []
    times: list[tuple[float, float]] = []
    audio_parts: list[np.ndarray] = []
    marks: list[TransitionTruth] = []
    frame_no = 0
    sample_no = 0
    clock = Fraction(0)  # timestamp of the next frame, in seconds
    textures: dict[int, np.ndarray] = {}

    def texture_of(index: int) -> np.ndarray:
        # Quantise once per shot; each frame is then just a window into it (two kept: a
        # transition needs the outgoing and the incoming shot).
        if index not in textures:
            spec = shots[index]
            raw = _shot_texture(spec, index, width, height, seed)
            textures[index] = (raw * 255.0 + 0.5).astype(np.uint8)
            for old in [i for i in textures if i < index - 1]:
                del textures[old]
        return textures[index]

    def picture(index: int, k: int) -> np.ndarray:
        """Frame ``k`` of shot ``index`` (negative k: before its first own frame)."""
        travel = k * shots[index].drift % 128  # back and forth over 64 px: no jump in a shot
        off = int(round(travel if travel <= 64 else 128 - travel))
        return texture_of(index)[off : off + height, off : off + width]

    def emit(img: np.ndarray, step: Fraction) -> None:
        nonlocal frame_no, clock
        if grains:
            noisy = img.astype(np.int16) + grains[frame_no % len(grains)]
            img = np.clip(noisy, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = round(clock / tick)
        if frame_no in forced:
            frame.pict_type = av.video.frame.PictureType.I
        frame.time_base = tick
        for packet in vstream.encode(frame):
            container.mux(packet)
        frame_no += 1
        clock += step

    def scaled(img: np.ndarray, level: float) -> np.ndarray:
        return (img.astype(np.float32) * level + 0.5).astype(np.uint8)

    join_list = list(joins or [])
    if len(join_list) > max(0, len(shots) - 1):
        raise ValueError("one join at most between each two consecutive shots")
    nominal = Fraction(1, fps)
    for index, spec in enumerate(shots):
        ranges.append((frame_no, frame_no + spec.frames - 1))
        step = (
            Fraction(spec.frame_seconds).limit_denominator(90000)
            if spec.frame_seconds
            else (Fraction(1, fps))
        )
        shot_start = clock
        for k in range(spec.frames):
            emit(picture(index, k), step)
        times.append((float(shot_start), float(clock)))
        join = join_list[index] if index < len(join_list) else None
        if join is not None and index + 1 < len(shots):
            marks.extend(
                write_join(
                    join,
                    index,
                    spec.frames,
                    frame_no,
                    picture,
                    scaled,
                    emit,
                    nominal,
                    (height, width),
                )
            )
        if has_audio:
            end_sample = int(clock * sample_rate)
            audio_parts.append(
                _shot_audio(spec, end_sample - sample_no, sample_no, sample_rate, rng)
            )
            sample_no = end_sample
    for packet in vstream.encode(None):
        container.mux(packet)

    if astream is not None:
        mono = np.concatenate(audio_parts)
        _encode_audio(container, astream, mono, channels, sample_rate)
    container.close()

    hard = [r[0] for i, r in enumerate(ranges[1:]) if is_cut(join_list, i)]
    cut_frames = tuple(hard)
    marks_all = sorted(
        [*marks, *(TransitionTruth("cut", c, c) for c in cut_frames)], key=lambda m: m.first
    )
    return FilmTruth(
        path=path,
        fps=fps,
        size=(width, height),
        shots=tuple(shots),
        shot_ranges=tuple(ranges),
        cut_frames=cut_frames,
        frame_count=frame_no,
        sample_rate=sample_rate if has_audio else None,
        has_audio=has_audio,
        video_codec=video_codec,
        audio_codec=audio_codec if has_audio else None,
        shot_times=tuple(times),
        transitions=tuple(marks_all) if join_list else (),
    )


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    mono: np.ndarray,
    channels: int,
    sample_rate: int,
) -> None:
    """Encode a mono float signal (duplicated to every channel) in encoder-sized frames."""
    fmt = stream.format.name if stream.format else "fltp"
    layout = "stereo" if channels == 2 else "mono"
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, len(mono), chunk):
        part = mono[start : start + chunk]
        multi = np.repeat(part[None, :], channels, axis=0)
        if fmt.startswith("s16"):
            data = (np.clip(multi, -1, 1) * 32767).astype(np.int16)
        else:
            data = multi.astype(np.float32)
        if not fmt.endswith("p"):  # packed formats: one plane, interleaved samples
            data = data.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def standard_shots() -> list[ShotSpec]:
    """Five shots mixing dark/bright pictures and tone/noise/silent audio (9.6 s at 25 fps)."""
    return [
        ShotSpec(frames=60, brightness=0.80, pattern="bars", audio="tone", tone_hz=440.0),
        ShotSpec(frames=45, brightness=0.10, pattern="checker", audio="noise", amplitude=0.4),
        ShotSpec(frames=50, brightness=0.55, pattern="circles", audio="silence"),
        ShotSpec(frames=30, brightness=0.90, pattern="noise", audio="tone", tone_hz=1000.0),
        ShotSpec(frames=55, brightness=0.20, pattern="gradient", audio="noise", amplitude=0.2),
    ]
