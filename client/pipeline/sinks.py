"""Where a run's prepared shots go (see ``client.pipeline``).

Every sink consumes one ``ShotSource`` (``consume(source) -> shots written``) and writes its
records through ``Outputs``, the results folder of the run: ``FramesWriter`` (the ``shots``
command) writes the sampled JPEGs and one record per shot; ``Poster`` (the ``analyze``
command) batches the shots, keeps up to ``in_flight`` batches posting over the servers and
writes each answer as it arrives, with the JPEGs it sent (unless ``analyze --no-frames``). Both
write the JPEGs with ``write_frames``: ``frames/shotNNNNN_fNNNNNNN.jpg`` (shot id, source frame
number), listed in the record's ``images``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from client.errors import ClientError
from client.media.probe import VideoInfo
from client.options import AttributeRequest, PostingOptions
from client.outputs import OutputDir, summarize
from client.pipeline.source import PreparedShot, ShotSource
from client.progress import Progress

if TYPE_CHECKING:  # httpx, which the shots command never needs, is imported with client.api
    from client.api import ServerPool

log = logging.getLogger("client.pipeline")


class Sink(Protocol):
    """Consumes a source to its end (or raises); returns the number of shots written."""

    def consume(self, source: ShotSource) -> int: ...


class Outputs:
    """The run's results folder as a sink for records: appends them to shots.jsonl (counting
    progress) and, at the end, checks that no shot is missing and writes the final files.

    ``attributes`` are the names the run asked for (None: the server's vocabulary): they lead
    the attribute columns of shots.csv and the attributes of summary.json.
    """

    def __init__(
        self,
        out: OutputDir,
        settings: dict[str, Any],
        analysed: bool,
        progress: Progress | None = None,
        attributes: tuple[str, ...] | None = None,
    ) -> None:
        self.dir = out
        self.settings = settings
        self.analysed = analysed
        self.progress = progress
        self.attributes = attributes

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records to shots.jsonl and count them as done."""
        self.dir.append(records)
        if self.progress is not None:
            self.progress.shots_done(len(records))

    def finish(
        self,
        info: VideoInfo,
        expected: Collection[int] | None,
        diagnostics: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Write shots.csv, summary.json and the completed run.json; return every record.
        With ``expected`` (the ids the pass found: 1..n, or those of the run's time range),
        every one must have a record."""
        records = self.dir.records()
        if expected is not None:
            missing = sorted(set(expected) - {r["shot_id"] for r in records})
            if missing:
                raise ClientError(f"shots missing from the results: {missing[:10]}")
        summary = summarize(
            records, info.summary_record(), self.settings, self.analysed, self.attributes
        )
        return self.dir.finalize(summary, self.analysed, diagnostics, self.attributes)


# What ``analyze`` keeps of each server result besides caption, attributes and audio class:
# the model's raw scores, the measured signals, the audio cues (null without audio features),
# the evidence fused into each score and the sizes of the generate call.
KEPT_RESULT_BLOCKS = ("model_attributes", "measured", "audio", "evidence", "generation")


def write_frames(frames: Path, prepared: PreparedShot) -> list[str]:
    """Write a shot's sampled JPEGs (the very bytes sent to a server) into ``frames`` as
    ``shotNNNNN_fNNNNNNN.jpg``; returns their paths relative to the results folder, in time
    order. Rewriting them on a resume gives the same bytes (the decode pass is deterministic)."""
    images = []
    for frame_no, jpeg in zip(prepared.sample_frames, prepared.jpegs, strict=True):
        name = f"shot{prepared.shot.shot_id:05d}_f{frame_no:07d}.jpg"
        (frames / name).write_bytes(jpeg)
        images.append(f"{frames.name}/{name}")
    return images


class FramesWriter:
    """The ``shots`` sink: each shot's sampled JPEGs in frames/ and its record, no server."""

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs

    def consume(self, source: ShotSource) -> int:
        """Write every prepared shot of ``source``; returns the number written."""
        frames = self.outputs.dir.frames_path
        frames.mkdir(parents=True, exist_ok=True)
        written = 0
        for prepared in source:
            record = {
                **prepared.base_record(),
                "images": write_frames(frames, prepared),
                "audio_features": prepared.audio_features,
            }
            self.outputs.append([record])
            written += 1
        return written


class Poster:
    """The ``analyze`` sink: batches prepared shots and keeps up to ``in_flight`` batches
    posting concurrently; each answer is written as it arrives.

    Every batch asks for ``attributes`` (None: the server's vocabulary); each record keeps the
    scores exactly as the server returned them, names and order (the pool has checked that
    they are numbers and, when requested, exactly the requested names), and the result's
    ``KEPT_RESULT_BLOCKS`` as returned (None when a server leaves one out). With ``frames``, the
    shot's JPEGs are written to frames/ (``write_frames``) and listed in ``images``.
    """

    def __init__(
        self,
        servers: ServerPool,
        outputs: Outputs,
        session_id: str | None,
        title: str | None,
        attributes: AttributeRequest | None = None,
        frames: bool = True,
    ) -> None:
        self.servers = servers
        self.frames = frames
        self.options: PostingOptions = servers.options
        self.outputs = outputs
        self.session_id = session_id
        self.title = title
        self.attributes = attributes
        self._slots = threading.Semaphore(self.options.in_flight)
        self._error: BaseException | None = None
        self._written = 0
        self._unstored = 0  # shots the server answered but could not store in the session
        self._lock = threading.Lock()

    def consume(self, source: ShotSource) -> int:
        """Consume the source; returns the number of shots written."""
        if self.frames:
            self.outputs.dir.frames_path.mkdir(parents=True, exist_ok=True)
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
        from client.api import shot_payload  # loaded by the ServerPool already: no cost here

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
        answer = self.servers.analyze_batch(payload, self.session_id, self.title, self.attributes)
        records = []
        frames = self.outputs.dir.frames_path
        for prepared, result in zip(batch, answer.results, strict=True):
            record = prepared.base_record()
            if self.frames:
                record["images"] = write_frames(frames, prepared)
            record.update(
                {
                    "caption": result.get("caption"),
                    "attributes": dict(result["attributes"]),
                    "audio_class": result.get("audio_class"),
                    "model": result.get("model") or answer.model,
                    # Fields the model's answer lacked (neutral values stand in): never data.
                    "fallback": list(result.get("fallback") or []),
                    "audio_features": prepared.audio_features,
                    **{key: result.get(key) for key in KEPT_RESULT_BLOCKS},
                }
            )
            records.append(record)
        self.outputs.append(records)
        with self._lock:
            self._written += len(records)
            first_unstored = answer.stored is False and self._unstored == 0
            if answer.stored is False:
                self._unstored += len(records)
        if first_unstored:
            log.warning(
                "%s could not store results in session %s (%s); they are kept in %s, and "
                "`qwen-client analyze` again with --force re-sends them",
                answer.server,
                self.session_id,
                answer.store_error or "no reason given",
                "shots.jsonl",
            )
