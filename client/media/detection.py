"""PySceneDetect detectors driven frame by frame from our own decode pass.

We do not let PySceneDetect open the file: each detector's ``process_frame(timecode, frame)``
gets the small BGR frames we decode anyway, so detection costs no second decode. Detectors may
report a cut up to ``event_buffer_length`` frames in the past (the AdaptiveDetector looks
``window_width`` frames ahead before deciding); ``CutFinder.delay`` tells the caller how many
frames to hold back before committing them to a shot, and ``finish`` flushes the detector.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import cv2
import numpy as np
import scenedetect.detectors.content_detector as _content_module
from scenedetect import (
    AdaptiveDetector,
    ContentDetector,
    FrameTimecode,
    HashDetector,
    HistogramDetector,
    SceneDetector,
)
from scenedetect.detector import FlashFilter

from client.options import DetectionOptions

log = logging.getLogger("client.media.detection")


def _fast_mean_pixel_distance(left: np.ndarray, right: np.ndarray) -> float:
    """Mean absolute difference of two 8-bit planes: the same value as PySceneDetect's
    ``_mean_pixel_distance`` (an exact integer L1 sum over the pixel count), computed by
    OpenCV in one pass instead of numpy's int32 copies (a third of the detector's time)."""
    return cv2.norm(left, right, cv2.NORM_L1) / float(left.shape[0] * left.shape[1])


def _speed_up_content_score() -> None:
    """Swap in ``_fast_mean_pixel_distance`` if PySceneDetect still has the helper and the two
    agree on a random pair of planes; otherwise leave PySceneDetect untouched."""
    original = getattr(_content_module, "_mean_pixel_distance", None)
    if original is None or original is _fast_mean_pixel_distance:
        return
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (37, 53), dtype=np.uint8) for _ in range(2))
    if abs(original(a, b) - _fast_mean_pixel_distance(a, b)) < 1e-9:
        _content_module._mean_pixel_distance = _fast_mean_pixel_distance


_speed_up_content_score()

# Each detector's threshold when none is given. Adaptive and content keep PySceneDetect's
# defaults, which find every listed cut of the real test media (tests/integration).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "adaptive": 3.0,
    "content": 27.0,
    "hash": 0.395,
    "histogram": 0.05,
}


def min_shot_frames(options: DetectionOptions, fps: Fraction) -> int:
    """The minimum shot length in whole frames at this film's rate (at least 1)."""
    return max(1, round(options.min_shot_seconds * float(fps)))


def make_detector(options: DetectionOptions, fps: Fraction) -> SceneDetector:
    """Build the configured detector. The minimum shot length is passed in frames."""
    threshold = options.threshold
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[options.detector]
    min_len = min_shot_frames(options, fps)
    if options.detector == "adaptive":
        return AdaptiveDetector(
            adaptive_threshold=threshold,
            min_scene_len=min_len,
            min_content_val=options.min_content_val,
        )
    if options.detector == "content":
        # SUPPRESS reports each cut on the frame it happens (MERGE may report it up to
        # min_scene_len frames late, which would force holding that many full frames back).
        return ContentDetector(
            threshold=threshold, min_scene_len=min_len, filter_mode=FlashFilter.Mode.SUPPRESS
        )
    if options.detector == "hash":
        return HashDetector(threshold=threshold, min_scene_len=min_len)
    return HistogramDetector(threshold=threshold, min_scene_len=min_len)


class CutFinder:
    """Feeds frames to a detector and returns the cut frame numbers it reports.

    A cut at frame ``c`` means a new shot starts at ``c``. Cuts are reported at most ``delay``
    frames after the frame they fall on, so a frame can be assigned to its shot once ``delay``
    newer frames have been processed.
    """

    def __init__(self, detector: SceneDetector, fps: Fraction) -> None:
        self.detector = detector
        self.fps = fps
        # Every frame's timecode takes its rate from this one: PySceneDetect copies the rate of
        # a FrameTimecode as is, where a Fraction is validated again for every frame (abstract
        # type checks and a comparison: a sixth of the detector's cost per frame).
        self._rate = FrameTimecode(0, fps)
        self.delay = max(0, int(detector.event_buffer_length))
        self._first: int | None = None
        self._last: int | None = None
        self._reported: set[int] = set()

    def _accept(self, timecodes: list[FrameTimecode]) -> list[int]:
        cuts = []
        for tc in timecodes:
            frame = int(tc.frame_num)
            # A "cut" on the first frame is no cut; repeated reports are ignored.
            if self._first is not None and frame <= self._first or frame in self._reported:
                continue
            self._reported.add(frame)
            cuts.append(frame)
        return sorted(cuts)

    def process(self, frame_no: int, bgr: np.ndarray) -> list[int]:
        """Feed one frame (frame numbers must increase); returns newly found cuts."""
        if self._first is None:
            self._first = frame_no
        self._last = frame_no
        return self._accept(self.detector.process_frame(FrameTimecode(frame_no, self._rate), bgr))

    def finish(self) -> list[int]:
        """Flush the detector after the last frame; returns any last cuts."""
        if self._last is None:
            return []
        return self._accept(self.detector.post_process(FrameTimecode(self._last, self._rate)))
