"""The straightforward way to get what ``qwen-client shots`` gets, for ``bench_client.py``.

PySceneDetect's ``detect()`` on the file (its own OpenCV decode), then an OpenCV seek
(``CAP_PROP_POS_FRAMES``) to each sampled frame, resized and JPEG-encoded, then per shot the
audio loaded for that shot alone (PyAV seek + decode + resample; librosa cannot read mp4 without
ffmpeg) and the client's features of it. Run in-process, with the feature code warmed first, so
it pays neither the interpreter's start nor any one-off warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np

from client.media.features import compute_features
from client.media.frames import output_size, sample_positions
from client.media.probe import probe

SAMPLE_RATE = 22050


def warm_features() -> None:
    """Run the feature code once on silence (its one-off imports and caches)."""
    compute_features(np.zeros(SAMPLE_RATE * 4, np.float32), SAMPLE_RATE)


def audio_for_shot(path: Path, start: float, end: float, sr: int) -> np.ndarray:
    """Open the film, seek and decode just this shot's audio as mono float32 at ``sr``."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        stream = container.streams.audio[0]
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        parts = []
        t_first = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > end:
                break
            if t_first is None:
                t_first = frame.time or 0.0
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        skip = max(0, int((start - (t_first or 0.0)) * sr))
        return y[skip : skip + int((end - start) * sr)]


def run_straightforward(film: Path) -> tuple[float, int]:
    """Wall seconds of the straightforward extraction of ``film`` and the shots it found."""
    from scenedetect import AdaptiveDetector, detect

    info = probe(film)
    size = output_size(info.width, info.height, 448, 28)
    t0 = time.perf_counter()
    scenes = detect(str(film), AdaptiveDetector())
    cap = cv2.VideoCapture(str(film))
    frames_total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    bounds = [(s.frame_num, e.frame_num - 1) for s, e in scenes] or [(0, frames_total - 1)]
    for first, last in bounds:
        for f in sample_positions(first, last, 5):
            cap.set(cv2.CAP_PROP_POS_FRAMES, f)
            ok, img = cap.read()
            if ok:
                small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cap.release()
    for first, last in bounds:
        start, end = first / float(info.fps), (last + 1) / float(info.fps)
        compute_features(audio_for_shot(film, start, end, SAMPLE_RATE), SAMPLE_RATE)
    return time.perf_counter() - t0, len(bounds)
