"""A shot's position in the film: frame numbers, seconds and timecodes.

Frame numbers count decoded frames from the first video frame (0-based), derived from the
frames' timestamps so that a skipped corrupt frame does not shift the rest. ``end_frame`` is the
last frame of the shot (inclusive); ``end_time`` is where the next shot starts (exclusive), so
consecutive shots tile the film without gaps, like PySceneDetect's scene lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from scenedetect import FrameTimecode


def timecode(frame: int, fps: Fraction) -> str:
    """``HH:MM:SS.mmm`` of a frame number at the given rate (PySceneDetect's format)."""
    return FrameTimecode(frame, fps=fps).get_timecode(precision=3)


@dataclass(frozen=True)
class Shot:
    """One detected shot. ``shot_id`` is 1-based in film order (stable across runs)."""

    shot_id: int
    start_frame: int
    end_frame: int
    fps: Fraction

    @property
    def frame_count(self) -> int:
        """Number of frame slots the shot spans."""
        return self.end_frame - self.start_frame + 1

    @property
    def start_time(self) -> float:
        """Seconds from the first frame to the shot's first frame."""
        return float(self.start_frame / self.fps)

    @property
    def end_time(self) -> float:
        """Seconds to the end of the shot's last frame (= the next shot's start)."""
        return float((self.end_frame + 1) / self.fps)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return float(self.frame_count / self.fps)

    def as_record(self) -> dict[str, Any]:
        """The timing fields written to shots.jsonl (seconds rounded to microseconds)."""
        return {
            "shot_id": self.shot_id,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "frame_count": self.frame_count,
            "start_time": round(self.start_time, 6),
            "end_time": round(self.end_time, 6),
            "duration": round(self.duration, 6),
            "start_timecode": timecode(self.start_frame, self.fps),
            "end_timecode": timecode(self.end_frame + 1, self.fps),
        }
