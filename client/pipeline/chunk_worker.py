"""The body of one decode worker process of a chunked decode (``client.pipeline.chunked``).

The worker runs the ordinary one-pass scanner (``client.media.scan.ShotScanner``) over its
chunk, from the keyframe the plan gives, with a ``DecodeWindow`` (frame numbers from the
film's index, the film's origin, a sync key at every shot start), encodes each closed shot's
samples to JPEG here (the bytes the one pass would send), and reports on one queue, in order:

* ``("key", chunk, frame_no, key)`` at every shot start (key None: not comparable yet);
* ``("at", chunk, frame_no)`` now and then: every frame up to ``frame_no`` is committed
  (every key up to there was sent);
* ``("shot", chunk, ScannedShot)`` with the samples' frames replaced by their JPEG bytes;
* ``("end", chunk, ScanStats)`` when the pass ended (at the film's end, or stopped);
* ``("unsafe", chunk, reason)`` or ``("error", chunk, text)`` when it failed.

It decodes until the parent sets its stop event (the parent knows where its neighbour took
over) or the film ends. SIGINT is ignored (the parent decides, and terminates workers on
Ctrl-C), and a worker whose parent died stops by itself.
"""

from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from typing import Any

from client.media.assembly import ScannedShot
from client.media.frames import Candidate, encode_jpeg
from client.media.keyframes import Chunk
from client.media.probe import VideoInfo
from client.media.scan import ShotScanner
from client.media.seams import ChunkUnsafe, DecodeWindow
from client.options import ExtractOptions

PROGRESS_EVERY = 25  # frames between two "at" messages


@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs: the film, the options, its chunk, the index's pts, the origin and
    the warm-up length of sync keys."""

    info: VideoInfo
    options: ExtractOptions
    chunk: Chunk
    pts: Any  # array('q') of the index, presentation order
    origin: float
    warm: int


def run_chunk(job: ChunkJob, out: Any, stop: Any) -> None:
    """Process entry point (see module doc); ``out`` a multiprocessing queue, ``stop`` an
    event."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    number = job.chunk.number
    seek_pts = job.pts[job.chunk.seek] if job.chunk.seek > 0 else None
    window = DecodeWindow(
        job.pts,
        job.origin,
        seek_pts,
        on_boundary=lambda frame_no, key: out.put(("key", number, frame_no, key)),
        warm=job.warm,
    )
    scanner: ShotScanner | None = None

    def on_frame(frame_no: int, _t: float) -> None:
        assert scanner is not None
        if scanner.stats.corrupt_packets:
            raise ChunkUnsafe(scanner.stats.errors[0])
        if frame_no % PROGRESS_EVERY == 0:
            if os.getppid() != parent:
                stop.set()  # the parent is gone: nobody reads what this pass finds
            out.put(("at", number, frame_no - scanner.stats.hold_frames))

    try:
        scanner = ShotScanner(job.info, job.options, on_frame=on_frame, stop=stop, window=window)
        sampling = job.options.sampling
        size = scanner.output_size
        for scanned in scanner:
            jpegs = [
                Candidate(c.frame_no, encode_jpeg(c.frame, size, sampling.jpeg_quality))
                for c in scanned.samples
            ]
            out.put(
                (
                    "shot",
                    number,
                    ScannedShot(scanned.shot, jpegs, scanned.stream_start, scanned.stream_end),
                )
            )
        if scanner.stats.corrupt_packets:
            raise ChunkUnsafe(scanner.stats.errors[0])
        out.put(("end", number, scanner.stats))
    except ChunkUnsafe as exc:
        out.put(("unsafe", number, str(exc)))
    except Exception as exc:  # handed to the parent, which decides whether it matters
        out.put(("error", number, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
