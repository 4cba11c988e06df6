"""``ShotSource``: the producer side of a run (see ``client.pipeline``).

A decode thread runs the single decode pass and queues each closed shot's preparation (JPEG
encoding and audio features, on a worker pool) in film order; an audio thread decodes the audio
paced to the video. Iterating the source yields ``PreparedShot``; ``close`` stops and joins
every thread it started, on every exit path.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from client.media import feature_loading
from client.media.assembly import ScannedShot
from client.media.audio import AudioTrack
from client.media.frames import encode_jpeg
from client.media.probe import VideoInfo
from client.media.scan import ShotScanner
from client.media.shot import Shot
from client.options import ExtractOptions
from client.progress import Progress

_END = object()
# A shot whose feature window misses more than this share of its audio (packets that could not
# be decoded) gets no audio features and an ``audio_error`` instead.
MAX_MISSING_AUDIO_FRACTION = 0.05


@dataclass
class PreparedShot:
    """A shot ready to send or write: encoded frames and audio features."""

    shot: Shot
    sample_frames: list[int]
    jpegs: list[bytes]
    audio_features: dict[str, Any] | None
    audio_error: str | None = None  # why the shot has no audio features although it should
    speech_error: str | None = None  # why its features have no speech fields although asked

    def base_record(self) -> dict[str, Any]:
        """Timing, sample frame numbers and the audio and speech errors (None when fine) for
        shots.jsonl; the callers add the audio features."""
        return {
            **self.shot.as_record(),
            "sample_frames": self.sample_frames,
            "audio_error": self.audio_error,
            "speech_error": self.speech_error,
        }


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ShotSource:
    """Runs the decode pass and the preparation workers; iterating yields ``PreparedShot`` in
    film order. Shots whose id is in ``skip`` are detected but not prepared or yielded."""

    def __init__(
        self,
        info: VideoInfo,
        options: ExtractOptions,
        skip: set[int] | frozenset[int] = frozenset(),
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        queue_size: int = 16,
    ) -> None:
        self.info = info
        self.options = options
        self.skip = frozenset(skip)
        self.progress = progress
        self.stop = stop or threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._pool = ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="prepare")
        self._audio: AudioTrack | None = None
        if options.audio.enabled and info.has_audio:
            # Imported in the background: decoding starts without waiting for scipy.
            feature_loading.start()
            self._audio = AudioTrack(info.path, options.audio)
        self.scanner = ShotScanner(info, options, on_frame=self._on_frame, stop=self.stop)
        self._pending_audio: dict[int, float] = {}  # shot id -> stream start, until sliced
        self._open_start = -math.inf  # stream time where the open shot starts
        self._audio_lock = threading.Lock()
        self._last_release = -math.inf
        self.detected = 0  # the last shot id the decoder closed so far
        self.shot_ids: list[int] = []  # every shot the pass found (in the run's time range)
        # Not a daemon: close() joins it on every exit path (no thread left in FFmpeg at exit).
        self._thread = threading.Thread(target=self._produce, name="decode", daemon=False)

    # --- decode thread ------------------------------------------------------------------------
    def _on_frame(self, frame_no: int, stream_time: float) -> None:
        if self.progress is not None:
            self.progress.frame(frame_no)
        if self._audio is not None:
            if self._open_start == -math.inf:  # the first shot starts at the first frame
                with self._audio_lock:  # (with a time range: no shot starts before it)
                    span = self.options.range
                    self._open_start = stream_time + (span.start if span is not None else 0.0)
            self._audio.advance_video(stream_time)
            if stream_time - self._last_release >= 5.0:
                self._last_release = stream_time
                self._release_audio(stream_time)

    def _release_audio(self, video_time: float) -> None:
        """Drop decoded audio no pending or open shot can need: everything before the oldest
        shot still waiting for its features, and in a very long open shot everything between
        its feature window and the last 2 s plus the minimum shot length (a cut can still be
        reported a few frames late, and a closed shot is held back until the next one has
        lasted the minimum shot length, so the next shot's start must stay)."""
        assert self._audio is not None
        recent = video_time - 2.0 - self.options.detection.min_shot_seconds
        with self._audio_lock:
            open_start = self._open_start
            needed = min([*self._pending_audio.values(), open_start, recent])
        if needed > -math.inf:
            self._audio.release_before(needed)
        window_end = open_start + self.options.audio.max_window_seconds
        if open_start > -math.inf and recent > window_end:
            self._audio.release_between(window_end, recent)

    def _produce(self) -> None:
        try:
            if self._audio is not None:
                self._audio.start()
            for scanned in self.scanner:
                shot_id = scanned.shot.shot_id
                self.detected = shot_id
                self.shot_ids.append(shot_id)
                with self._audio_lock:
                    self._open_start = scanned.stream_end
                done = shot_id in self.skip
                if self.progress is not None:
                    self.progress.shot_detected(already_done=done)
                if done:
                    continue
                with self._audio_lock:
                    self._pending_audio[shot_id] = scanned.stream_start
                # Only the future is queued: once prepared, the shot's decoded frames are freed
                # and just its JPEGs wait in the queue.
                if not self._put(self._pool.submit(self._prepare, scanned)):
                    return
            if self._audio is not None and not self.scanner.stats.range_stopped:
                # To the end of the audio; a pass stopped after its time range has let the
                # audio run lookahead_seconds past the last frame, more than its shots need.
                self._audio.advance_video(math.inf)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(_Failure(exc))
        finally:
            self._put(_END)

    def _put(self, item: Any) -> bool:
        """Queue an item, giving up when the run is stopped (so the thread can end)."""
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                if self.stop.is_set() and item is not _END:
                    return False
                if self.stop.is_set():  # make room for the end marker: the consumer is gone
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()

    # --- worker pool ----------------------------------------------------------------------------
    def _prepare(self, scanned: ScannedShot) -> PreparedShot:
        sampling = self.options.sampling
        size = self.scanner.output_size
        # A chunked decode's workers send their samples already encoded (the same bytes).
        jpegs = [
            c.frame
            if isinstance(c.frame, bytes)
            else encode_jpeg(c.frame, size, sampling.jpeg_quality)
            for c in scanned.samples
        ]
        features = None
        audio_error = None
        speech_error = None
        shot_id = scanned.shot.shot_id
        if self._audio is not None:
            try:
                a = self.options.audio
                start = scanned.stream_start
                end = min(scanned.stream_end, start + a.max_window_seconds)
                samples = self._audio.slice(start, end)
                missing, reason = self._audio.missing(start, end)
                if missing > MAX_MISSING_AUDIO_FRACTION * (end - start):
                    # Zeros where the audio could not be decoded are not silence: send no
                    # features rather than fake ones, and say why.
                    audio_error = (
                        f"audio could not be decoded for {missing:.2f} of {end - start:.2f} s"
                        f" ({reason})"
                    )
                else:
                    features, speech_error = feature_loading.features().shot_audio_features(
                        samples, self._audio.sample_rate, a.tempo_min_seconds, a.speech
                    )
            finally:
                with self._audio_lock:
                    self._pending_audio.pop(shot_id, None)
        return PreparedShot(
            shot=scanned.shot,
            sample_frames=[c.frame_no for c in scanned.samples],
            jpegs=jpegs,
            audio_features=features,
            audio_error=audio_error,
            speech_error=speech_error,
        )

    def audio_report(self) -> dict[str, Any] | None:
        """The audio track's decode report (None when audio is not used in this run)."""
        return self._audio.report() if self._audio is not None else None

    # --- consumer --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PreparedShot]:
        self._thread.start()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                yield item.result()
        finally:
            self.close()

    def close(self) -> None:
        """Stop decoding, the audio decoder, the workers and the audio warm-up, and wait for
        all of them (idempotent): after it returns no thread of this source is running."""
        self.stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._thread.join(timeout=0.1)
        if self._audio is not None:
            self._audio.close()  # first: a worker may be waiting for audio that will not come
        self._pool.shutdown(wait=True, cancel_futures=True)
        # The run's shots are done: the warm-up has nothing left to speed up.
        feature_loading.stop()
