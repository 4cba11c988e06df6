"""A shot's position in the film: frame numbers, seconds and timecodes.

Frame numbers are the real decoded frame index: the first decoded video frame is 0 and every
decoded frame counts one, whatever its timestamp. Times come from the frames' timestamps,
relative to the first frame: ``start_time`` is the shot's first frame's timestamp and
``end_time`` the next shot's first frame's (the last frame of the film lasts as long as the one
before it), so consecutive shots tile the film without gaps, like PySceneDetect's scene lists, and
``end_frame + 1`` of the last shot is the number of frames decoded. On a constant-frame-rate
film both agree (``start_time == start_frame / fps``); on a variable-frame-rate film, or one
whose damaged frames could not be decoded, frame numbers still count real frames while times
stay true to the clock. Timecodes are the times written as ``HH:MM:SS.mmm``. A shot built
without times (``start_seconds`` None) falls back to ``frame / fps``.

SMPTE timecodes (``start_smpte``, ``end_smpte``; see ``client.media.smpte``) count frames at
the film's rate, for editors: ``start_smpte`` is the shot's first frame, ``end_smpte`` the frame
after its last (``end_frame + 1``), i.e. the exclusive out point of edit decision lists, which is
the next shot's ``start_smpte``.

Transition fields (``marks``, from ``client.media.boundaries``): ``in_frame``/``out_frame``
(inclusive) are the shot's usable frames, transition frames at its ends excluded, with
``in_time``/``out_time`` (the out time is the frame after ``out_frame``'s) and
``in_smpte``/``out_smpte`` (out exclusive, like ``end_smpte``); ``transition_in`` and
``transition_out`` are records ``{"kind", "start_frame", "end_frame", "start_time",
"end_time"}`` (kind ``cut``, ``dissolve``, ``fade_out`` or ``fade_in``) or None at the film's
start and end; ``technical_cues`` lists the black segments inside the shot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from scenedetect import FrameTimecode

from client.media.smpte import smpte


def timecode(frame: int, fps: Fraction) -> str:
    """``HH:MM:SS.mmm`` of a frame number at the given rate (PySceneDetect's format)."""
    return FrameTimecode(frame, fps=fps).get_timecode(precision=3)


def seconds_timecode(seconds: float) -> str:
    """``HH:MM:SS.mmm`` of a time in seconds (same format as ``timecode``)."""
    ms = max(0, round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


@dataclass(frozen=True)
class Shot:
    """One detected shot. ``shot_id`` is 1-based in film order (stable across runs).

    ``start_seconds``/``end_seconds`` are the shot's times from the frames' timestamps (see
    the module doc); None means "derive them from the frame numbers at ``fps``".
    """

    shot_id: int
    start_frame: int
    end_frame: int
    fps: Fraction
    start_seconds: float | None = None
    end_seconds: float | None = None
    marks: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def frame_count(self) -> int:
        """Number of decoded frames in the shot."""
        return self.end_frame - self.start_frame + 1

    @property
    def start_time(self) -> float:
        """Seconds from the film's first frame to the shot's first frame."""
        if self.start_seconds is not None:
            return self.start_seconds
        return float(self.start_frame / self.fps)

    @property
    def end_time(self) -> float:
        """Seconds to the end of the shot's last frame (= the next shot's start)."""
        if self.end_seconds is not None:
            return self.end_seconds
        return float((self.end_frame + 1) / self.fps)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end_time - self.start_time

    def as_record(self) -> dict[str, Any]:
        """The timing fields written to shots.jsonl (seconds rounded to microseconds; SMPTE
        out point exclusive, see the module doc)."""
        return {
            "shot_id": self.shot_id,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "frame_count": self.frame_count,
            "start_time": round(self.start_time, 6),
            "end_time": round(self.end_time, 6),
            "duration": round(self.duration, 6),
            "start_timecode": seconds_timecode(self.start_time),
            "end_timecode": seconds_timecode(self.end_time),
            "start_smpte": smpte(self.start_frame, self.fps),
            "end_smpte": smpte(self.end_frame + 1, self.fps),  # exclusive out point
            **(self.marks or {}),
        }
