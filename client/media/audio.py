"""The film's audio, decoded once in a background thread to mono float32 at one fixed rate.

PyAV decodes whatever codec the container holds (AAC, MP3, Opus, Vorbis, FLAC...) and its
``AudioResampler`` mixes to mono and resamples to ``AudioOptions.sample_rate``, so every shot's
features are computed on the same kind of signal. The decoded track is kept in one-second
blocks; the pipeline releases blocks no shot needs any more and decoding never runs more than
``lookahead_seconds`` ahead of the video, so memory stays bounded for any film length.

Times given to this module are stream times in seconds (the video frames' own timestamps), so
an audio stream that starts later or earlier than the video stays aligned.

Damaged audio is never passed off as silence: packets that fail to decode leave a gap that is
filled with zeros only to keep later audio aligned, and recorded as *missing*, as is everything
after a failure that stopped decoding. ``missing(start, end)`` tells how much of a shot's
window is missing and why, so the pipeline can withhold that shot's features (``audio_error``).
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import av
import numpy as np

from client.options import AudioOptions

log = logging.getLogger("client.media.audio")

GAP_MIN_SECONDS = 0.005  # smaller timestamp gaps are rounding, not lost packets


def find_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The film's main audio stream: the first marked default, else the first one."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    for s in streams:
        if s.disposition & av.stream.Disposition.default:
            return s
    return streams[0]


class AudioTrack:
    """Background decoder of one audio stream with blocking, bounded random access."""

    def __init__(self, path: str | Path, options: AudioOptions) -> None:
        self.path = str(path)
        self.options = options
        self.sample_rate = options.sample_rate
        self._block = options.sample_rate  # one-second blocks
        self._cond = threading.Condition()
        self._blocks: dict[int, np.ndarray] = {}
        self._current = np.empty(self._block, np.float32)  # block being filled
        self._fill = 0
        self._decoded = 0  # samples decoded so far (absolute count from sample 0)
        self._released_blocks = 0  # blocks before this index were dropped
        self._t0: float | None = None  # stream time of sample 0
        self._video_time = -math.inf
        self._resume_at = math.inf  # video time the paced decoder waits for (inf: not waiting)
        self._eof = False
        self._closed = False
        self.error: str | None = None  # why decoding stopped early, if it did
        self.corrupt_packets = 0
        self.first_problem: str | None = None  # the first decode error of any kind
        # (start, end, reason) stream-time ranges whose audio could not be decoded; end is
        # math.inf once decoding stopped for good.
        self._missing: list[tuple[float, float, str]] = []
        self._next_in: float | None = None  # stream time where the next decoded frame belongs
        self._last_frame_seconds = 0.0
        self._failed_since_good: str | None = None  # a packet failed after the last good frame
        # Not a daemon: close() joins it, so no thread is left inside FFmpeg at exit.
        self._thread = threading.Thread(target=self._run, name="audio-decode", daemon=False)

    def start(self) -> AudioTrack:
        """Start decoding in the background."""
        self._thread.start()
        return self

    # --- producer side -------------------------------------------------------------------
    def _append(self, samples: np.ndarray) -> None:
        """Copy decoded samples into the current block, closing blocks as they fill."""
        with self._cond:
            pos = 0
            while pos < len(samples):
                take = min(self._block - self._fill, len(samples) - pos)
                self._current[self._fill : self._fill + take] = samples[pos : pos + take]
                self._fill += take
                self._decoded += take
                pos += take
                if self._fill == self._block:
                    index = self._decoded // self._block - 1
                    if index >= self._released_blocks:
                        self._blocks[index] = self._current
                    self._current = np.empty(self._block, np.float32)
                    self._fill = 0
            self._cond.notify_all()

    def _wait_for_video(self) -> bool:
        """Block while decoding is too far ahead of the video; False when closed."""
        with self._cond:
            while not self._closed:
                t0 = self._t0 or 0.0
                ahead_until = t0 + self._decoded / self.sample_rate - self.options.lookahead_seconds
                if ahead_until <= self._video_time:
                    self._resume_at = math.inf
                    return True
                # advance_video wakes this thread once the video reaches this time, not on
                # every frame (25 wake-ups a second cost more CPU than decoding the audio).
                self._resume_at = ahead_until
                self._cond.wait(0.5)
            return False

    def _decoded_end(self) -> float:
        """Stream time up to which samples are stored (caller holds the lock)."""
        return (self._t0 or 0.0) + self._decoded / self.sample_rate

    def _mark_missing(self, start: float, end: float, reason: str) -> None:
        """Record a range of audio that could not be decoded (caller holds the lock)."""
        if end > start:
            self._missing.append((start, end, reason))
        if self.first_problem is None:
            self.first_problem = reason

    def _run(self) -> None:
        try:
            self._decode()
        except Exception as exc:  # an audio failure must not kill the run: shots lose audio
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("audio decoding stopped: %s", self.error)
        finally:
            with self._cond:
                stopped = self.error or (
                    f"the last packets could not be decoded: {self._failed_since_good}"
                    if self._failed_since_good
                    else None
                )
                if stopped is not None:
                    self._mark_missing(self._decoded_end(), math.inf, stopped)
                if self._fill:
                    self._blocks[self._decoded // self._block] = self._current[: self._fill].copy()
                    self._fill = 0
                self._eof = True
                self._cond.notify_all()

    def _decode(self) -> None:
        # probe imports this module (find_audio_stream), so its helper is imported here.
        from client.media.probe import discard_other_streams

        with av.open(self.path) as container:
            stream = find_audio_stream(container)
            if stream is None:
                return
            stream.thread_type = "AUTO"  # type: ignore[attr-defined]  # not in PyAV's stubs
            discard_other_streams(container, stream)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
            packets = container.demux(stream)
            while True:
                if not self._wait_for_video():
                    return
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    self.corrupt_packets += 1
                    log.warning("audio: stopped reading the stream: %s", exc)
                    self.error = f"stopped reading the audio stream: {exc}"
                    return
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    self.corrupt_packets += 1
                    self._failed_since_good = str(exc)
                    if self.corrupt_packets <= 3:
                        log.warning("audio: skipped a corrupt packet: %s", exc)
                    continue
                for frame in frames:
                    self._push(frame, resampler)
            for out in resampler.resample(None):
                self._store(out)

    def _push(self, frame: av.AudioFrame, resampler: av.AudioResampler) -> None:
        t = float(frame.time) if frame.time is not None else None
        if self._t0 is None:
            with self._cond:
                self._t0 = t if t is not None else 0.0
        if t is not None and self._next_in is not None:
            gap = t - self._next_in
            # A gap of more than half a frame (and 5 ms: Matroska rounds timestamps to 1 ms)
            # means packets were lost. Zeros keep what follows aligned; the range is recorded
            # as missing, not silent.
            if gap > max(GAP_MIN_SECONDS, 0.5 * self._last_frame_seconds):
                with self._cond:
                    reason = self._failed_since_good or "audio packets missing"
                    self._mark_missing(self._next_in, t, f"{reason}")
                self._append(np.zeros(int(round(gap * self.sample_rate)), np.float32))
        self._failed_since_good = None
        if frame.sample_rate:
            start = t if t is not None else (self._next_in or 0.0)
            self._last_frame_seconds = frame.samples / frame.sample_rate
            self._next_in = start + self._last_frame_seconds
        for out in resampler.resample(frame):
            self._store(out)

    def _store(self, out: av.AudioFrame) -> None:
        samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        if len(samples):
            self._append(samples)

    # --- consumer side -------------------------------------------------------------------
    def advance_video(self, stream_time: float) -> None:
        """Tell the decoder how far the video has got (it may run lookahead_seconds ahead)."""
        with self._cond:
            if stream_time > self._video_time:
                self._video_time = stream_time
                if stream_time >= self._resume_at:
                    self._cond.notify_all()

    def release_before(self, stream_time: float) -> None:
        """Drop decoded audio that ends before ``stream_time`` (no shot will ask for it)."""
        with self._cond:
            if self._t0 is None:
                return
            keep_from = int((stream_time - self._t0) * self.sample_rate) // self._block
            for index in [i for i in self._blocks if i < keep_from]:
                del self._blocks[index]
            self._released_blocks = max(self._released_blocks, keep_from)

    def release_between(self, start: float, end: float) -> None:
        """Drop decoded audio lying wholly between two stream times (the middle of a very long
        shot, beyond the part its features are computed on)."""
        with self._cond:
            if self._t0 is None or end <= start:
                return
            first = math.ceil((start - self._t0) * self.sample_rate / self._block)
            last = math.floor((end - self._t0) * self.sample_rate / self._block)
            for index in [i for i in self._blocks if first <= i < last]:
                del self._blocks[index]

    def slice(self, start: float, end: float) -> np.ndarray:
        """Mono samples between two stream times, waiting until they are decoded.

        Parts before the audio's start, after its end or already released are zeros (silence).
        """
        with self._cond:
            while not self._eof and (
                self._t0 is None or self._decoded < (end - self._t0) * self.sample_rate
            ):
                self._cond.wait(0.5)
            t0 = self._t0 if self._t0 is not None else 0.0
            first = int(round((start - t0) * self.sample_rate))
            last = int(round((end - t0) * self.sample_rate))
            out = np.zeros(max(0, last - first), np.float32)
            if not len(out):
                return out
            current = self._decoded // self._block
            for index in range(max(0, first // self._block), last // self._block + 1):
                block = self._blocks.get(index)
                if block is None and index == current and self._fill:
                    block = self._current[: self._fill]
                if block is None:
                    continue
                b0 = index * self._block
                lo, hi = max(first, b0), min(last, b0 + len(block))
                if lo < hi:
                    out[lo - first : hi - first] = block[lo - b0 : hi - b0]
            return out

    def missing(self, start: float, end: float) -> tuple[float, str | None]:
        """Seconds of ``[start, end)`` whose audio could not be decoded, and the first reason.

        Call after ``slice`` for the same window (which waits until it is decoded).
        """
        with self._cond:
            total, reason = 0.0, None
            for lo, hi, why in self._missing:
                overlap = min(end, hi) - max(start, lo)
                if overlap > 0:
                    total += overlap
                    reason = reason or why
            return min(total, max(0.0, end - start)), reason

    def report(self) -> dict[str, object]:
        """What went wrong with the audio in this pass, for run.json."""
        with self._cond:
            finite = [hi - lo for lo, hi, _ in self._missing if hi != math.inf]
            tail = [lo for lo, hi, _ in self._missing if hi == math.inf]
            return {
                "error": self.error or self.first_problem,
                "corrupt_packets": self.corrupt_packets,
                "missing_seconds": round(sum(finite), 6),
                "missing_from": round(tail[0], 6) if tail else None,
            }

    @property
    def held_seconds(self) -> float:
        """Seconds of decoded audio currently held in memory."""
        with self._cond:
            return (sum(len(b) for b in self._blocks.values()) + self._fill) / self.sample_rate

    def close(self) -> None:
        """Stop the decoder thread and wait for it (it ends at its next packet; idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
