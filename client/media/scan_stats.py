"""``ScanStats``: what one decode pass decoded, dropped and could not read (for run.json)."""

from __future__ import annotations

from dataclasses import dataclass, field

REORDER_SLACK = 16  # frames a decoder may still hold back when a pass stops mid-film


@dataclass
class ScanStats:
    """Counters of one decode pass.

    ``packets`` counts the video packets read that carry data (one coded frame each);
    ``declared_frames`` is the container's frame count when it has one (MP4/MOV do, WebM and
    MKV usually not); without one, ``duration_frames`` estimates it from the declared duration
    and frame rate (a damaged WebM cluster is skipped by the demuxer without any error, so the
    packets read alone would not show the loss). Frames expected but not decoded are
    ``dropped_frames``; the duration estimate only counts beyond a tolerance of 1 % + 2
    frames (durations are rounded, and audio can outlast the picture). A pass that ended at
    its time range's end (``range_stopped``) only expects the packets it read, less the
    decoder's reorder delay (``REORDER_SLACK`` frames still inside the decoder).
    """

    frames: int = 0
    corrupt_packets: int = 0
    packets: int = 0
    declared_frames: int | None = None
    duration_frames: int | None = None  # duration x frame rate, when no count is declared
    first_time: float | None = None
    last_frame: int = -1
    stopped_early: bool = False
    read_stopped: bool = False  # a read error ended the pass before the end of the file
    range_stopped: bool = False  # the pass ended after the --end of the run's time range
    # Frames held back before being committed to a shot: the detector's delay, or the
    # transition finder's lookahead when longer (a pass with a range decodes this far past it).
    hold_frames: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def expected_frames(self) -> int:
        """How many frames the film should have yielded (see the class doc)."""
        if self.range_stopped:
            return max(self.frames, self.packets - REORDER_SLACK)
        expected = max(self.packets, self.declared_frames or 0)
        estimate = self.duration_frames
        if (
            self.declared_frames is None
            and estimate is not None
            and estimate - expected > 2 + 0.01 * estimate
        ):
            expected = estimate
        return expected

    @property
    def dropped_frames(self) -> int:
        """Frames expected but not decoded."""
        return max(0, self.expected_frames - self.frames)

    def as_record(self, max_errors: int = 20) -> dict[str, object]:
        """The decode report written to run.json (the first ``max_errors`` messages)."""
        expected = self.expected_frames
        return {
            "expected_frames": expected,
            "frames_decoded": self.frames,
            "video_packets": self.packets,
            "declared_frames": self.declared_frames,
            "dropped_frames": self.dropped_frames,
            "dropped_fraction": round(self.dropped_frames / expected, 6) if expected else 0.0,
            "corrupt_packets": self.corrupt_packets,
            "read_stopped": self.read_stopped,
            "errors": self.errors[:max_errors],
        }
