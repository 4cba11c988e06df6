"""The film's frame index from one demux-only pass, and the chunk plan of a parallel decode.

``build_index`` reads every video packet once without decoding it (a 2-hour film's packets are
read in seconds) and keeps each frame's presentation timestamp in presentation order: frame
``k`` of the decode pass is the ``k``-th smallest pts (a decoder outputs frames in pts order), so
the index gives the exact frame number of any decoded frame, wherever decoding started, and the
keyframes (the only places a decoder can start from) as frame numbers.

A film the index cannot vouch for is not split (``FrameIndex.problem`` says why, and the caller
decodes it in one pass): a packet without a timestamp, two packets with the same one, or one
flagged corrupt. Damage the demuxer does not see (a packet that fails to decode) is caught by
the decode workers, which check every frame's pts against the index
(``client.media.seams.DecodeWindow``).

``plan_chunks`` splits the frames at keyframes into chunks of about equal *work*: chunk ``i``
owns the frames from its border (a keyframe) to the next border and starts decoding at the last
keyframe at least ``warm`` frames before its border (the warm-up that gives the detectors their
history), so a chunk's cost is its frames plus its warm-up; the borders are placed so that the
largest cost is as small as the keyframes allow.
"""

from __future__ import annotations

import bisect
import logging
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from client.media.probe import find_video_stream, open_container

log = logging.getLogger("client.media.keyframes")


@dataclass(frozen=True)
class FrameIndex:
    """Every frame's pts in presentation order (``pts[k]`` is frame ``k``'s), the keyframes'
    frame numbers (ascending), the stream's time base, the count of video packets carrying
    data, and ``problem``: why the film must not be split (None when it may)."""

    pts: array
    keyframes: tuple[int, ...]
    time_base: Fraction
    packets: int
    problem: str | None = None

    @property
    def frames(self) -> int:
        """Number of frames (one per data packet)."""
        return len(self.pts)

    def seconds(self, frame_no: int) -> float:
        """Stream time of a frame (the timestamp the decoder gives it)."""
        return float(self.pts[frame_no] * self.time_base)

    def keyframe_at_or_before(self, frame_no: int) -> int:
        """The last keyframe at or before ``frame_no`` (0 when there is none)."""
        i = bisect.bisect_right(self.keyframes, frame_no) - 1
        return self.keyframes[i] if i >= 0 else 0


def build_index(path: str | Path) -> FrameIndex:
    """One demux-only pass over the film's video stream (see module doc)."""
    p = Path(path)
    container = open_container(p)
    try:
        stream = find_video_stream(container, p.name)
        time_base = stream.time_base or Fraction(1, 90000)
        stamps: list[int] = []
        keys: list[int] = []
        problem: str | None = None
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the demuxer's end-of-stream marker
            if packet.pts is None:
                problem = problem or "a video packet has no timestamp"
                continue
            if packet.is_corrupt:
                problem = problem or f"a corrupt video packet at pts {packet.pts}"
            stamps.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    except av.error.FFmpegError as exc:
        problem = f"the video packets could not be read to the end: {exc}"
    finally:
        container.close()
    ordered = sorted(stamps)
    if any(a == b for a, b in zip(ordered, ordered[1:], strict=False)):
        problem = problem or "two video packets share a timestamp"
    rank = {pts: k for k, pts in enumerate(ordered)}
    keyframes = tuple(sorted(rank[k] for k in set(keys)))
    if not keyframes or keyframes[0] != 0:
        problem = problem or "the film does not start on a keyframe"
    return FrameIndex(array("q", ordered), keyframes, Fraction(time_base), len(stamps), problem)


@dataclass(frozen=True)
class Chunk:
    """One chunk of a plan: it owns frames ``start..end - 1`` and decodes from keyframe ``seek``
    (``seek <= start``; chunk 0 starts at frame 0 with no seek)."""

    number: int
    seek: int
    start: int
    end: int

    @property
    def cost(self) -> int:
        """Frames this chunk decodes at least (its warm-up and its own frames)."""
        return self.end - self.seek


def plan_chunks(index: FrameIndex, chunks: int, warm: int, overrun: int = 0) -> list[Chunk]:
    """Split the film at keyframes into at most ``chunks`` chunks of about equal cost (see the
    module doc); one chunk when the film is too short or has too few keyframes to gain.
    ``overrun``: the frames a chunk is expected to decode past its end before the next one
    takes over (counted in the cost of every chunk but the last)."""
    n = index.frames
    whole = [Chunk(0, 0, 0, n)]
    if chunks <= 1 or n == 0 or index.problem is not None:
        return whole
    keys = index.keyframes

    def seek_for(border: int) -> int:
        return index.keyframe_at_or_before(max(0, border - warm))

    def borders_within(limit: int) -> list[int] | None:
        borders, seek = [0], 0
        while n - seek > limit:
            if len(borders) == chunks:
                return None
            # The farthest keyframe this chunk can reach within the limit.
            i = bisect.bisect_right(keys, seek + limit - overrun) - 1
            if i < 0 or keys[i] <= borders[-1]:
                return None
            borders.append(keys[i])
            seek = seek_for(keys[i])
        return borders

    lo, hi = max(1, -(-n // chunks)), n
    best = [0]
    while lo <= hi:  # the smallest largest cost the keyframes allow
        mid = (lo + hi) // 2
        found = borders_within(mid)
        if found is not None:
            best, hi = found, mid - 1
        else:
            lo = mid + 1
    plan = []
    for i, border in enumerate(best):
        end = best[i + 1] if i + 1 < len(best) else n
        plan.append(Chunk(i, seek_for(border) if i else 0, border, end))
    return plan


def chunks_from_borders(index: FrameIndex, borders: list[int], warm: int) -> list[Chunk]:
    """A plan with the given borders (keyframe frame numbers after 0; tests place a border on a
    chosen keyframe). Raises ValueError for a border that is not a keyframe."""
    points = [0, *sorted(set(borders) - {0})]
    for b in points[1:]:
        if b not in index.keyframes:
            raise ValueError(f"chunk border {b} is not a keyframe")
    plan = []
    for i, border in enumerate(points):
        end = points[i + 1] if i + 1 < len(points) else index.frames
        seek = index.keyframe_at_or_before(max(0, border - warm)) if i else 0
        plan.append(Chunk(i, seek, border, end))
    return plan
