"""``BackgroundJob``: one stoppable, joinable background thread at a time.

The audio feature code is imported and warmed up on background threads
(``client.media.feature_loading``, ``client.media.features``). Those threads are not daemons,
because a thread still importing native code (BLAS, onnxruntime) at interpreter exit can
abort the process, so each must be joined on every exit path: ``stop`` sets the job's stop flag
(the target checks it between steps) and joins the thread; after it returns no thread of the
job is running. Both modules share this one implementation of start/stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundJob:
    """A named slot for one non-daemon thread running ``target(stop_flag)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, target: Callable[[threading.Event], None]) -> threading.Thread:
        """Start ``target`` unless the job's thread is already running; returns the thread."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self._thread
            self._stop.clear()
            self._thread = threading.Thread(
                target=target, args=(self._stop,), name=self.name, daemon=False
            )
            self._thread.start()
            return self._thread

    def stop(self) -> None:
        """Ask the thread to stop after its current step and join it (idempotent, cheap when
        nothing was started)."""
        with self._lock:
            thread = self._thread
            self._stop.set()
        if thread is not None:
            thread.join()
        with self._lock:
            if self._thread is thread:
                self._thread = None
