"""The stages of a run and how they overlap.

::

    decode thread:  demux+decode video (FFmpeg threads) -> detect cuts -> close shots
                         |  (bounded queue of shots in film order; blocks when full)
    worker pool:    JPEG encoding + librosa features of each closed shot
    audio thread:   demux+decode+resample audio, paced to stay near the video position
    main thread:    takes prepared shots in order -> batches of N ->
    posting pool:   K batches in flight over the servers -> results appended to shots.jsonl

Memory is bounded whatever the film's length: the decode thread holds a few frames and the
candidates of the open shot (and of a closed shot held back until the next one has lasted the
minimum shot length, see ``video.ShotAssembler``), the queue holds at most ``queue_size``
prepared shots, at most K batches are in flight, and decoded audio is released as soon as no
pending shot needs it.

Resume: shots already in ``shots.jsonl`` are still detected (the decode pass is deterministic,
so shot ids are stable) but are not encoded, analysed or written again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.api import ServerPool, shot_payload
from client.audio import AudioTrack
from client.errors import ClientError
from client.features import compute_features, stop_warm_up, warm_up_in_background
from client.frames import encode_jpeg
from client.options import ExtractOptions, PostingOptions
from client.outputs import OutputDir, film_fingerprint, summarize
from client.progress import Progress
from client.shot import Shot
from client.video import ScannedShot, ShotScanner, VideoInfo
from qwen_server.schemas import ATTRIBUTES

log = logging.getLogger("client.pipeline")

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

    def base_record(self) -> dict[str, Any]:
        """Timing, sample frame numbers and the audio error (None when fine) for shots.jsonl;
        the callers add the audio features."""
        return {
            **self.shot.as_record(),
            "sample_frames": self.sample_frames,
            "audio_error": self.audio_error,
        }


@dataclass(frozen=True)
class RunReport:
    """What a finished run did (printed by the CLI)."""

    film: str
    out: Path
    shots: int
    written_now: int
    resumed: int
    frames: int
    duration: float
    elapsed: float
    corrupt_packets: int
    already_complete: bool = False
    dropped_frames: int = 0
    audio_errors: int = 0  # shots without audio features because the audio could not be decoded
    servers: dict[str, dict[str, int]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        """Source frames processed per wall-clock second."""
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        """Seconds of film processed per wall-clock second."""
        return self.duration / self.elapsed if self.elapsed > 0 else 0.0


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
            warm_up_in_background()
            self._audio = AudioTrack(info.path, options.audio)
        self.scanner = ShotScanner(info, options, on_frame=self._on_frame, stop=self.stop)
        self._pending_audio: dict[int, float] = {}  # shot id -> stream start, until sliced
        self._open_start = -math.inf  # stream time where the open shot starts
        self._audio_lock = threading.Lock()
        self._last_release = -math.inf
        self.detected = 0  # shots closed by the decoder so far
        # Not a daemon: close() joins it on every exit path (no thread left in FFmpeg at exit).
        self._thread = threading.Thread(target=self._produce, name="decode", daemon=False)

    # --- decode thread ------------------------------------------------------------------------
    def _on_frame(self, frame_no: int, stream_time: float) -> None:
        if self.progress is not None:
            self.progress.frame(frame_no)
        if self._audio is not None:
            if self._open_start == -math.inf:  # the first shot starts at the first frame
                with self._audio_lock:
                    self._open_start = stream_time
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
            if self._audio is not None:
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
        jpegs = [encode_jpeg(c.frame, size, sampling.jpeg_quality) for c in scanned.samples]
        features = None
        audio_error = None
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
                    features = compute_features(
                        samples, self._audio.sample_rate, a.tempo_min_seconds
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
        """Stop decoding, the audio decoder, the workers and the librosa warm-up, and wait for
        all of them (idempotent): after it returns no thread of this source is running."""
        self.stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._thread.join(timeout=0.1)
        if self._audio is not None:
            self._audio.close()  # first: a worker may be waiting for audio that will not come
        self._pool.shutdown(wait=True, cancel_futures=True)
        stop_warm_up()  # the run's shots are done: the warm-up has nothing left to speed up


def _manifest(command: str, info: VideoInfo, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        # 2: frame numbers are the decoded frame index, times the frames' timestamps, and shots
        # carry audio_error; a run of format 1 is not resumed into (--force starts over).
        "format": 2,
        "command": command,
        "film": {"name": info.path.name, **film_fingerprint(info.path)},
        "settings": settings,
    }


def _finish(
    out: OutputDir,
    info: VideoInfo,
    settings: dict[str, Any],
    analysed: bool,
    expected: int | None,
    diagnostics: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    records = out.records()
    if expected is not None:
        missing = sorted(set(range(1, expected + 1)) - {r["shot_id"] for r in records})
        if missing:
            raise ClientError(f"shots missing from the results: {missing[:10]}")
    summary = summarize(records, info.as_record(), settings, analysed)
    return out.finalize(summary, analysed, diagnostics)


def _diagnostics(source: ShotSource, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What run.json reports about damage met in this pass: video decode errors and dropped
    frames, and the audio's errors with the number of shots left without audio features."""
    audio = source.audio_report()
    if audio is not None:
        errored = [r for r in records if r.get("audio_error")]
        audio = {**audio, "shots_with_audio_error": len(errored)}
        if audio["error"] is None and errored:  # only from an earlier, interrupted pass
            audio["error"] = errored[0]["audio_error"]
    return {"video_decode": source.scanner.stats.as_record(), "audio_error": audio}


def _warn_about_damage(name: str, diagnostics: dict[str, Any]) -> None:
    """One stderr line per kind of damage, so a damaged film is never reported as clean."""
    video = diagnostics["video_decode"]
    if video["corrupt_packets"] or video["dropped_frames"]:
        log.warning(
            "%s: %d corrupt video packet(s); %d frame(s) could not be decoded (%.1f %%); "
            "see run.json",
            name,
            video["corrupt_packets"],
            video["dropped_frames"],
            100 * video["dropped_fraction"],
        )
    audio = diagnostics["audio_error"]
    if audio is not None and audio["error"]:
        log.warning(
            "%s: audio decoding failed (%s); %d shot(s) have no audio features (audio_error)",
            name,
            audio["error"],
            audio["shots_with_audio_error"],
        )


def extract(
    info: VideoInfo,
    out_dir: str | Path,
    options: ExtractOptions,
    progress: Progress | None = None,
    force: bool = False,
) -> RunReport:
    """The ``shots`` command: detect shots, write sample JPEGs, audio features, shots.jsonl,
    shots.csv and summary.json. No server involved. Resumable like ``analyze``."""
    out = OutputDir(out_dir)
    settings = options.output_settings()
    return _run(
        "shots",
        info,
        out,
        options,
        settings,
        progress,
        force,
        sink=lambda source: _write_frames(source, out, progress),
        analysed=False,
    )


def _write_frames(source: ShotSource, out: OutputDir, progress: Progress | None) -> int:
    out.frames_path.mkdir(parents=True, exist_ok=True)
    written = 0
    for prepared in source:
        images = []
        for frame_no, jpeg in zip(prepared.sample_frames, prepared.jpegs, strict=True):
            name = f"shot{prepared.shot.shot_id:05d}_f{frame_no:07d}.jpg"
            (out.frames_path / name).write_bytes(jpeg)
            images.append(f"{out.frames_path.name}/{name}")
        record = {
            **prepared.base_record(),
            "images": images,
            "audio_features": prepared.audio_features,
        }
        out.append([record])
        written += 1
        if progress is not None:
            progress.shots_done(1)
    return written


def analyze(
    info: VideoInfo,
    out_dir: str | Path,
    options: ExtractOptions,
    servers: ServerPool,
    session_id: str | None,
    title: str | None,
    progress: Progress | None = None,
    force: bool = False,
) -> RunReport:
    """The ``analyze`` command: extract shots and have the servers analyse them in batches,
    writing results as they come (resumable; see the module doc)."""
    out = OutputDir(out_dir)
    settings = {**options.output_settings(), "session_id": session_id, "title": title}
    poster = _Poster(servers, servers.options, out, session_id, title, progress)
    if progress is not None:
        servers.on_wait = progress.status
    report = _run(
        "analyze",
        info,
        out,
        options,
        settings,
        progress,
        force,
        sink=poster.run,
        analysed=True,
        on_start=servers.drop_unreachable,
    )
    return RunReport(**{**report.__dict__, "servers": servers.summary()})


def _run(
    command: str,
    info: VideoInfo,
    out: OutputDir,
    options: ExtractOptions,
    settings: dict[str, Any],
    progress: Progress | None,
    force: bool,
    sink: Callable[[ShotSource], int],
    analysed: bool,
    on_start: Callable[[], None] | None = None,
) -> RunReport:
    started = time.monotonic()
    manifest = _manifest(command, info, settings)
    old = out.manifest()
    done = out.prepare(manifest, force)
    if old is not None and old.get("complete") and not force and done:
        # Same film and settings, already finished: just make sure the final files exist.
        records = _finish(out, info, settings, analysed, expected=None)
        return RunReport(
            film=info.path.name,
            out=out.path,
            shots=len(records),
            written_now=0,
            resumed=len(records),
            frames=0,
            duration=records[-1]["end_time"] if records else 0.0,
            elapsed=time.monotonic() - started,
            corrupt_packets=0,
            already_complete=True,
            records=records,
        )
    if done:
        log.info("resuming: %d shots already done in %s", len(done), out.path)
    if on_start is not None:
        on_start()
    source = ShotSource(info, options, skip=done, progress=progress)
    try:
        written = sink(source)
    finally:
        source.close()
        if progress is not None:
            progress.close()
    stats = source.scanner.stats
    if stats.stopped_early:
        raise ClientError("decoding stopped before the end of the film")
    diagnostics = _diagnostics(source, out.records())
    records = _finish(out, info, settings, analysed, source.detected, diagnostics)
    _warn_about_damage(info.path.name, diagnostics)
    return RunReport(
        film=info.path.name,
        out=out.path,
        shots=len(records),
        written_now=written,
        resumed=len(done),
        frames=stats.frames,
        duration=records[-1]["end_time"] if records else 0.0,
        elapsed=time.monotonic() - started,
        corrupt_packets=stats.corrupt_packets,
        dropped_frames=stats.dropped_frames,
        audio_errors=sum(1 for r in records if r.get("audio_error")),
        records=records,
    )


class _Poster:
    """Batches prepared shots and keeps up to ``in_flight`` batches posting concurrently."""

    def __init__(
        self,
        servers: ServerPool,
        options: PostingOptions,
        out: OutputDir,
        session_id: str | None,
        title: str | None,
        progress: Progress | None,
    ) -> None:
        self.servers = servers
        self.options = options
        self.out = out
        self.session_id = session_id
        self.title = title
        self.progress = progress
        self._slots = threading.Semaphore(options.in_flight)
        self._error: BaseException | None = None
        self._written = 0
        self._lock = threading.Lock()

    def run(self, source: ShotSource) -> int:
        """Consume the source; returns the number of shots written."""
        pool = ThreadPoolExecutor(self.options.in_flight, thread_name_prefix="post")
        futures: list[Future[None]] = []
        try:
            batch: list[PreparedShot] = []
            for prepared in source:
                self._raise_if_failed()
                batch.append(prepared)
                if len(batch) >= self.options.batch_size:
                    futures.append(self._submit(pool, batch))
                    batch = []
            if batch:
                futures.append(self._submit(pool, batch))
            for f in futures:
                while not f.done():
                    self._raise_if_failed()
                    time.sleep(0.05)
            self._raise_if_failed()
        except BaseException:
            source.stop.set()
            # Wakes threads waiting for a server and shuts down the connections of requests
            # still in flight (their results are simply not written; a rerun sends those shots
            # again), so the posting threads end now and are joined: none outlives the run.
            self.servers.abort()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return self._written

    def _raise_if_failed(self) -> None:
        with self._lock:
            if self._error is not None:
                raise self._error

    def _submit(self, pool: ThreadPoolExecutor, batch: list[PreparedShot]) -> Future[None]:
        while not self._slots.acquire(timeout=0.2):
            self._raise_if_failed()
        future = pool.submit(self._post, batch)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:
            with self._lock:
                if self._error is None:
                    self._error = exc

    def _post(self, batch: list[PreparedShot]) -> None:
        payload = [
            shot_payload(
                p.shot.shot_id,
                p.jpegs,
                p.audio_features,
                round(p.shot.start_time, 6),
                round(p.shot.end_time, 6),
                round(p.shot.duration, 6),
            )
            for p in batch
        ]
        answer = self.servers.analyze_batch(payload, self.session_id, self.title)
        records = []
        for prepared, result in zip(batch, answer.results, strict=True):
            attrs = result["attributes"]
            records.append(
                {
                    **prepared.base_record(),
                    "caption": result.get("caption"),
                    "attributes": {a: attrs[a] for a in ATTRIBUTES},
                    "audio_class": result.get("audio_class"),
                    "model": result.get("model") or answer.model,
                    "audio_features": prepared.audio_features,
                }
            )
        self.out.append(records)
        with self._lock:
            self._written += len(records)
        if self.progress is not None:
            self.progress.shots_done(len(records))
