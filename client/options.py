"""Typed settings of every client stage, with the defaults the CLI uses.

Only settings that change what ends up in the output files are recorded in a run's manifest
(``output_settings``, and the requested attributes, ``AttributeRequest.output_setting``): a
resume with other values of those refuses to mix results. Settings that only change speed (batch
size, requests in flight, servers, workers) can differ between runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from qwen_server.contract.vocabulary import MAX_ATTRIBUTES, AttributeSpec, Vocabulary, check_name

DETECTORS: tuple[str, ...] = ("adaptive", "content", "hash", "histogram")


@dataclass(frozen=True)
class DetectionOptions:
    """How shots are found (PySceneDetect detectors fed with our own decoded frames).

    ``threshold`` None means the detector's tuned default (see ``detect.DEFAULT_THRESHOLDS``).
    ``min_shot_seconds`` is converted to whole frames at the film's rate. ``detect_width`` is the
    smallest width frames are shrunk to for detection (an integer factor of the source width is
    used so the shrink stays cheap, so the real width lies in [detect_width, 2*detect_width)).
    """

    detector: str = "adaptive"
    threshold: float | None = None
    min_shot_seconds: float = 0.6
    detect_width: int = 256
    min_content_val: float = 15.0  # adaptive only: a cut also needs this much absolute change
    # Gradual transitions and black (client.media.transitions): a black frame has a grey mean
    # and standard deviation of at most black_luma (0..255), a black cue lasts at least
    # black_min_frames; dissolves up to dissolve_max_seconds get their middle as boundary.
    transitions: bool = True
    black_luma: float = 16.0
    black_min_frames: int = 5
    dissolve_max_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.black_luma < 128:
            raise ValueError("black_luma must be in [0, 128)")
        if self.black_min_frames < 1:
            raise ValueError("black_min_frames must be >= 1")
        if not self.dissolve_max_seconds > 0:
            raise ValueError("dissolve_max_seconds must be > 0")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, not {self.detector!r}")
        if self.min_shot_seconds < 0:
            raise ValueError("min_shot_seconds must be >= 0")
        if self.detect_width < 16:
            raise ValueError("detect_width must be >= 16")


@dataclass(frozen=True)
class SamplingOptions:
    """Which frames of a shot are sent, and how they are encoded.

    ``candidates`` bounds the decoded frames kept per open shot while its length is still unknown
    (see ``frames.ShotReservoir``): a larger value places the samples closer to their ideal
    positions at the cost of memory, capped by ``candidate_memory_mb`` for large frames.
    """

    frames_per_shot: int = 5
    max_side: int = 448
    snap: int = 28  # the short side is rounded to a multiple of this (Qwen2-VL patch grid)
    jpeg_quality: int = 90
    candidates: int = 40
    candidate_memory_mb: int = 128  # fewer candidates for big frames (10 at 4K, 40 at 1080p)

    def __post_init__(self) -> None:
        if self.frames_per_shot < 1:
            raise ValueError("frames_per_shot must be >= 1")
        if self.max_side < 28:
            raise ValueError("max_side must be >= 28")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        if self.snap < 1:
            raise ValueError("snap must be >= 1")
        if self.candidates < 2 * self.frames_per_shot:
            raise ValueError("candidates must be at least twice frames_per_shot")


@dataclass(frozen=True)
class AudioOptions:
    """Audio decoding and per-shot feature extraction.

    Shots shorter than ``tempo_min_seconds`` get no tempo or beats (fewer than about four
    beats at 120 BPM: the beat tracker's tempo is not meaningful). Features of a shot longer
    than ``max_window_seconds`` are computed on its first ``max_window_seconds``, which bounds
    the audio held in memory for a single endless shot. ``speech`` runs silero-vad on each
    shot (``speech_ratio``, ``speech_segments``, and ``music_ratio``, which needs it).
    """

    enabled: bool = True
    sample_rate: int = 22050
    tempo_min_seconds: float = 2.0
    speech: bool = True
    max_window_seconds: float = 300.0
    lookahead_seconds: float = 30.0  # how far audio decoding may run ahead of video

    def __post_init__(self) -> None:
        if self.sample_rate < 4000:
            raise ValueError("sample_rate must be >= 4000")


@dataclass(frozen=True)
class PostingOptions:
    """How batches reach the servers.

    Transient failures (connection errors, timeouts, 408/425/429/5xx) are retried with a capped
    exponential backoff with jitter, or after the server's ``Retry-After``. While another server
    is left, a server leaves the rotation after ``max_consecutive_failures`` hard failures in a
    row (no answer, or a 5xx without Retry-After). The last server left is never dropped that
    fast: it is retried for ``retry_for`` seconds from its first failure (a restart of a single
    server does not abort the film), then the run fails (exit 3). Any server answering "come
    back later" (429, 503 + Retry-After) leaves after ``max_unavailable_seconds`` of it.

    ``max_attempts`` bounds the attempts of one batch that reached a server and failed there
    (500, 408, a read timeout, a connection dropped mid-answer); attempts that found no server
    (connection refused, connect timeout, 502/503/504) do not count: they are bounded by time.
    """

    batch_size: int = 8
    in_flight: int = 2
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    write_timeout: float = 60.0
    max_attempts: int = 8
    max_consecutive_failures: int = 4
    max_unavailable_seconds: float = 600.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 120.0
    retry_for: float = 120.0

    def __post_init__(self) -> None:
        if not self.retry_for >= 0:  # also refuses NaN
            raise ValueError("retry_for must be >= 0 seconds")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.in_flight < 1:
            raise ValueError("in_flight must be >= 1")


@dataclass(frozen=True)
class TimeRange:
    """The part of a film a run covers (``--start``/``--end``), in seconds from its first frame;
    ``end`` None is the film's end.

    A shot is in the run when it overlaps ``[start, end)``; a shot that straddles a bound is
    clipped to the range (its first frame is the first at or after ``start``, its last the
    last before ``end``), keeping the film's real frame numbers and shot ids, so timecodes stay
    true to the source and the shots are those of a whole-film run (see
    ``client.media.scan``).
    """

    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if not self.start >= 0:  # also refuses NaN
            raise ValueError(f"--start must be >= 0 seconds, not {self.start}")
        if self.end is not None and not self.end > self.start:
            raise ValueError(f"--end ({self.end} s) must be after --start ({self.start} s)")

    def contains(self, seconds: float) -> bool:
        """Whether a time (seconds from the first frame) lies in ``[start, end)``."""
        return seconds >= self.start and (self.end is None or seconds < self.end)

    def as_record(self) -> dict[str, float | None]:
        """The run setting (run.json): start and end seconds."""
        return {"start": self.start, "end": self.end}


@dataclass(frozen=True)
class ExtractOptions:
    """Everything that decides which shots, frames and features a film yields; ``range``
    None is the whole film."""

    detection: DetectionOptions = field(default_factory=DetectionOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    audio: AudioOptions = field(default_factory=AudioOptions)
    workers: int = 2  # threads encoding JPEGs and computing audio features
    range: TimeRange | None = None

    def output_settings(self) -> dict[str, Any]:
        """The settings that change the output files (recorded in the run manifest)."""
        audio = asdict(self.audio)
        audio.pop("lookahead_seconds")
        return {
            "detection": asdict(self.detection),
            "sampling": asdict(self.sampling),
            "audio": audio,
            "range": self.range.as_record() if self.range is not None else None,
        }


@dataclass(frozen=True)
class AttributeRequest:
    """The attributes a run asks the servers to score (``analyze --attributes``), in order.

    Either plain ``names`` (``specs`` None): the server must know each one, and scores it with
    its own description and evidence; or a whole vocabulary read from a file (``specs``): every
    attribute is sent with its description and evidence, so any server can score it. No
    request at all (None where one is taken) means the server's whole vocabulary.
    """

    names: tuple[str, ...]
    specs: tuple[AttributeSpec, ...] | None = None
    source: str = "--attributes"  # where it came from, for messages

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError(f"{self.source}: no attributes")
        if len(self.names) > MAX_ATTRIBUTES:
            raise ValueError(
                f"{self.source}: {len(self.names)} attributes (at most {MAX_ATTRIBUTES})"
            )
        seen: set[str] = set()
        for name in self.names:
            check_name(name, self.source)  # VocabularyError is a ValueError
            if name in seen:
                raise ValueError(f"{self.source}: {name!r} is listed twice")
            seen.add(name)
        if self.specs is not None and tuple(s.name for s in self.specs) != self.names:
            raise ValueError(f"{self.source}: names and definitions differ")

    @classmethod
    def from_names(cls, names: Iterable[str], source: str = "--attributes") -> AttributeRequest:
        """Names the server must know (ValueError naming the first bad one)."""
        return cls(tuple(names), None, source)

    @classmethod
    def from_vocabulary(cls, vocabulary: Vocabulary, source: str) -> AttributeRequest:
        """Every attribute of a vocabulary file, sent with its definition."""
        return cls(vocabulary.names, vocabulary.attributes, source)

    def request_items(self) -> list[str | dict[str, Any]]:
        """The ``attributes`` field of ``POST /analyze_batch``: names, or ``{name,
        description, evidence}`` definitions (``evidence`` always sent, null included, so the
        server fuses exactly what the file says)."""
        if self.specs is None:
            return list(self.names)
        return [
            {"name": s.name, "description": s.description, "evidence": s.evidence}
            for s in self.specs
        ]

    def output_setting(self) -> list[str | dict[str, Any]]:
        """What run.json records (the request as sent): a resume compares it, so another
        vocabulary, order, description or evidence is another run."""
        return self.request_items()
