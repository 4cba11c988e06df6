"""The audio feature code, loaded in a background thread so that decoding does not wait for it.

``client.media.features`` and its modules are plain numpy now (about 10 ms to import; they
imported scipy.fft, 0.27 s, before), but its warm-up loads onnxruntime and silero-vad's session
(0.1-0.2 s of CPU) and builds the filter banks and the K-weighting FIR. Done at the top of the
pipeline, that ran in the main thread before the first frame was decoded. ``start()`` imports
the module in a thread and then starts its warm-up (``features.warm_up_in_background``), so both
overlap with probing and decoding; ``features()`` is the module for code that computes features
(a caller that comes while the thread is still importing waits for that import, through
Python's import lock, rather than importing twice); ``stop()`` joins the thread and stops the
warm-up.

The thread is not a daemon and ``stop()`` must run before the process exits (the CLI and
``ShotSource.close`` call it on every path): a thread still importing native code (BLAS,
onnxruntime) at interpreter exit can abort the process (see ``client.media.features``).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from types import ModuleType

from client.media.background_job import BackgroundJob

log = logging.getLogger("client.media.feature_loading")

MODULE = "client.media.features"

_loader = BackgroundJob("audio-import")


def _load(stop: threading.Event) -> None:
    try:
        module = importlib.import_module(MODULE)
    except Exception:  # the caller of features() meets the same error and reports it
        log.debug("loading %s failed", MODULE, exc_info=True)
        return
    if not stop.is_set():
        module.warm_up_in_background()


def start() -> None:
    """Import the feature code and start its warm-up in the background (once at a time;
    cheap when the module is already imported and warmed)."""
    _loader.start(_load)


def features() -> ModuleType:
    """``client.media.features`` (imported here when ``start`` was not called)."""
    return importlib.import_module(MODULE)


def stop() -> None:
    """Join the import thread and stop the warm-up (idempotent): after it returns no thread
    of this module or of the warm-up is running."""
    _loader.stop()
    module = sys.modules.get(MODULE)
    if module is not None:
        module.stop_warm_up()
