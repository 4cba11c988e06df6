"""Progress on stderr: frames decoded of the film, shots done of an estimate, ETA, shots/s.

One tqdm bar counts frames (the film's length in frames is known up front, so tqdm's ETA is
meaningful); the shot counts ride in its postfix. The total number of shots is only known at the
end, so it is estimated from the cut rate so far. Methods are called from several threads.
"""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm


class Progress:
    """Thread-safe progress reporting; ``enabled=False`` (``--quiet``) prints nothing."""

    def __init__(
        self, total_frames: int | None, enabled: bool = True, label: str = "shots"
    ) -> None:
        self.enabled = enabled
        self.label = label
        self._lock = threading.Lock()
        self._frames = 0
        self._shown_frames = 0
        self._detected = 0
        self._done = 0
        self._done_now = 0
        self._started = time.monotonic()
        self._total_frames = total_frames
        self._status: str | None = None  # e.g. "waiting for server ...", shown in the postfix
        self._bar: tqdm | None = None
        if enabled:
            tty = sys.stderr.isatty()
            self._bar = tqdm(
                total=total_frames,
                unit="frame",
                unit_scale=False,
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.2 if tty else 5.0,
                smoothing=0.1,
                leave=True,
            )

    def frame(self, frame_no: int) -> None:
        """A frame was decoded (``frame_no`` is its 0-based number)."""
        with self._lock:
            self._frames = frame_no + 1
            if self._bar is not None and self._frames - self._shown_frames >= 12:
                self._refresh()

    def shot_detected(self, already_done: bool) -> None:
        """A shot was closed by the decoder (already_done: it was analysed in an earlier run)."""
        with self._lock:
            self._detected += 1
            if already_done:
                self._done += 1

    def shots_done(self, count: int) -> None:
        """``count`` shots were written to the output."""
        with self._lock:
            self._done += count
            self._done_now += count
            if self._bar is not None:
                self._refresh()

    def status(self, text: str | None) -> None:
        """Show ``text`` (e.g. "waiting for server ...") on the progress line; None clears it."""
        with self._lock:
            self._status = text
            if self._bar is not None:
                self._refresh()
                self._bar.refresh()

    def _refresh(self) -> None:
        assert self._bar is not None
        if self._frames > self._shown_frames:
            self._bar.update(self._frames - self._shown_frames)
            self._shown_frames = self._frames
        estimate = self._detected
        if self._total_frames and self._frames:
            estimate = max(
                self._detected, round(self._detected * self._total_frames / self._frames)
            )
        rate = self._done_now / max(1e-6, time.monotonic() - self._started)
        text = f"{self.label} {self._done}/~{estimate} ({self._detected} found), {rate:.2f} shots/s"
        if self._status:
            text += f", {self._status}"
        self._bar.set_postfix_str(text, refresh=False)

    @property
    def frames(self) -> int:
        """Frames decoded so far."""
        return self._frames

    def close(self) -> None:
        """Show the final counts and release the terminal line."""
        with self._lock:
            if self._bar is not None:
                if self._total_frames is not None and self._frames != self._total_frames:
                    self._bar.total = self._frames  # the estimate from the container was off
                self._refresh()
                self._bar.close()
                self._bar = None
