"""The per-frame analysis of the decode pass, run one frame behind the decoder on its own thread.

Each decoded frame is shrunk to the detector's small picture (``FrameConverter``), fed to the
cut detector (``CutFinder``) and to the transition finder (``TransitionFinder``); together that
is 0.6-1.2 ms of Python and OpenCV per frame at 1080p. Done in the decode thread, it ran in
series with decoding, so a whole-film pass took decode time plus analysis time (4.35 s against
2.55 s for a bare decode of a clean 60 s 1080p film, 16.8 s against 14.2 s for a grainy one),
while the decoder's slice threads left part of the second core idle.

``AnalysisPipeline`` runs ``FrameAnalyser.analyse`` on one worker thread, ``lag`` frames behind
the decoder: the decode thread submits each frame as it comes and takes the result of the frame
``lag`` places back, so decoding the next frames overlaps with analysing the earlier ones.
What the scanner does with the results (the boundary planner, the shot assembler, sample
choice, freeing decoder frames) stays in the decode thread, in the same order as before, one
step per frame, ``lag`` frames later; so the shots are those of the inline analysis, and every
decoder buffer is released at a point fixed by the decode sequence (the determinism that
``ShotScanner._detach`` explains: the worker only reads frames the decode thread still holds).
The cost is ``lag`` more decoded frames alive (6 at 1080p: about 18 MB).

``lag=0`` analyses inline, in the caller's thread: the scanner uses it where a step needs the
analysers' state as of exactly the frame being stepped (a time range's end, which closes the
transition finder there, and a chunk worker's sync keys, ``client.media.seams``).
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import av

from client.media.detection import CutFinder
from client.media.frames import FrameConverter
from client.media.transitions import TransitionFinder, TransitionGroup

PIPELINE_LAG = 6  # frames the analysis may trail the decoder by (whole-film passes)


@dataclass(frozen=True)
class FrameAnalysis:
    """What one frame told the analysers: cuts newly reported, transition groups newly final,
    and how far the transition finder has settled (``math.inf`` without a finder)."""

    cuts: list[int] = field(default_factory=list)
    groups: list[TransitionGroup] = field(default_factory=list)
    settled: float = math.inf


class FrameAnalyser:
    """The analysers of one pass, fed one decoded frame at a time in frame order."""

    def __init__(
        self,
        converter: FrameConverter,
        cut_finder: CutFinder,
        transitions: TransitionFinder | None,
    ) -> None:
        self.converter = converter
        self.cut_finder = cut_finder
        self.transitions = transitions

    def analyse(self, frame_no: int, frame: av.VideoFrame) -> FrameAnalysis:
        """Shrink one frame and feed it to the detector and the transition finder."""
        small = self.converter.detection_frame(frame)
        cuts = self.cut_finder.process(frame_no, small)
        finder = self.transitions
        if finder is None:
            return FrameAnalysis(cuts)
        groups = finder.process(frame_no, small)
        return FrameAnalysis(cuts, groups, finder.settled)


class _Failed:
    """An analysis that raised: ``result()`` raises it again in the decode thread."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_STOP = object()


class AnalysisPipeline:
    """``FrameAnalyser.analyse`` inline (``lag`` 0) or on one worker thread (see module doc).

    ``submit`` hands over a frame (in frame order); ``result`` returns the ``FrameAnalysis``
    of the oldest frame not yet returned (inline: of the frame just submitted), waiting for
    the worker if needed and raising what the analysis raised. Two ``SimpleQueue``s and no
    futures: a ``ThreadPoolExecutor`` future per frame cost about 0.15 ms of the decode
    thread's time per frame. ``close`` stops and joins the worker; after it returns no thread
    of the pipeline is running.
    """

    def __init__(self, analyser: FrameAnalyser, lag: int) -> None:
        self.analyser = analyser
        self.lag = max(0, lag)
        self._inline: deque[FrameAnalysis] = deque()
        self._todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[FrameAnalysis | _Failed] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if self.lag:
            # Not a daemon: close() joins it (no thread left inside OpenCV at exit).
            self._thread = threading.Thread(target=self._work, name="frame-analysis")
            self._thread.start()

    def _work(self) -> None:
        analyse = self.analyser.analyse
        while True:
            item = self._todo.get()
            if item is _STOP:
                return
            try:
                self._done.put(analyse(*item))
            except BaseException as exc:  # re-raised by result() in the decode thread
                self._done.put(_Failed(exc))
                return

    def submit(self, frame_no: int, frame: av.VideoFrame) -> None:
        """Analyse a frame now (lag 0) or queue it for the worker."""
        if self._thread is None:
            self._inline.append(self.analyser.analyse(frame_no, frame))
        else:
            self._todo.put((frame_no, frame))

    def result(self) -> FrameAnalysis:
        """The analysis of the oldest frame whose result was not taken yet."""
        if self._thread is None:
            return self._inline.popleft()
        found = self._done.get()
        if isinstance(found, _Failed):
            raise found.exc
        return found

    def close(self) -> None:
        """Stop the worker after its current frame and join it (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._todo.put(_STOP)
            thread.join()
