"""``JobProgress``: the client's ``Progress`` interface (``frame``, ``shot_detected``,
``shots_done``, ``status``, ``close``) counting into a job's status instead of a tqdm bar.

It is also where decoding stops promptly: ``frame`` is called by the decode thread for every
decoded frame, and raises ``JobStopped`` once the job's stop flag is set; the client's
``ShotSource`` hands that exception to the consumer, ``Poster`` aborts its posting threads,
and ``Run`` closes the source (every thread joined), so a cancel ends the job's work within a
frame's decode plus the batch in the engine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .transport import StopFlag


@dataclass
class Counts:
    """A snapshot of a job's counters."""

    frames_decoded: int
    frames_total: int | None
    shots_found: int
    shots_analysed: int
    elapsed_s: float
    eta_s: float | None
    decoding_done: bool
    waiting: str | None


class JobProgress:
    """Thread-safe counters of one job's pass (see the module doc)."""

    def __init__(self, frames_total: int | None, stop: StopFlag) -> None:
        self.frames_total = frames_total
        self.stop = stop
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._frames = 0
        self._found = 0
        self._analysed = 0
        self._analysed_now = 0  # analysed in this pass (not resumed): the rate's numerator
        self._first_analysis: float | None = None
        self._decoded_at: float | None = None  # when the last frame was decoded
        self._waiting: str | None = None
        self.closed = False

    # --- the client's Progress interface ------------------------------------------------------
    def frame(self, frame_no: int) -> None:
        """A frame was decoded; raises JobStopped when the job must stop."""
        self.stop.check()
        with self._lock:
            # The chunked source reports frames as its workers commit them, not one by one.
            self._frames = max(self._frames, frame_no + 1)
            if self.frames_total is not None and self._frames >= self.frames_total:
                self._decoded_at = self._decoded_at or time.monotonic()

    def shot_detected(self, already_done: bool) -> None:
        """A shot was closed by the decoder (already_done: analysed before a restart)."""
        with self._lock:
            self._found += 1
            if already_done:
                self._analysed += 1

    def shots_done(self, count: int) -> None:
        """``count`` shots were analysed, stored and written to shots.jsonl."""
        with self._lock:
            self._analysed += count
            self._analysed_now += count
            if self._first_analysis is None:
                self._first_analysis = time.monotonic()

    def status(self, text: str | None) -> None:
        """What the job waits for (the model loading, a full queue); None clears it."""
        with self._lock:
            self._waiting = text

    def close(self) -> None:
        """The pass ended (done, failed or stopped)."""
        with self._lock:
            self.closed = True
            self._decoded_at = self._decoded_at or time.monotonic()

    # --- reading ------------------------------------------------------------------------------
    def snapshot(self) -> Counts:
        """The counters now, with the elapsed time and an ETA (None while unknown).

        The ETA is the larger of what decoding still needs at its rate so far and what
        analysis still needs at its rate so far (the two overlap); shots still to be found are
        estimated from the cut rate so far.
        """
        with self._lock:
            now = time.monotonic()
            elapsed = now - self._started
            total = self.frames_total
            eta: float | None = None
            decode_left = 0.0
            if total and self._frames and self._decoded_at is None:
                decode_left = (total - self._frames) * elapsed / self._frames
                eta = decode_left
            if self._analysed_now and self._found and total and self._frames:
                expected = max(self._found, round(self._found * total / self._frames))
                rate = self._analysed_now / max(1e-6, now - self._started)
                eta = max(decode_left, (expected - self._analysed) / rate)
            if self.closed:
                eta = 0.0
            return Counts(
                frames_decoded=self._frames,
                frames_total=total,
                shots_found=self._found,
                shots_analysed=self._analysed,
                elapsed_s=round(elapsed, 3),
                eta_s=round(eta, 1) if eta is not None else None,
                decoding_done=self._decoded_at is not None,
                waiting=self._waiting,
            )
