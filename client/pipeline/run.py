"""``Run``: one command's pass over a film, from resume to the final files (see
``client.pipeline``).

A run prepares the results folder (resuming an earlier run of the same film and settings, or
refusing a different one), feeds one ``ShotSource`` into one sink, and always closes the source
(every thread it started is joined) and the progress bar, whatever happens. ``extract`` (the
``shots`` command) and ``analyze`` build the run with their sink.

Resume: shots already in ``shots.jsonl`` are still detected (the decode pass is deterministic,
so shot ids are stable) but are not encoded, analysed or written again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.errors import ClientError
from client.media.probe import VideoInfo
from client.options import AttributeRequest, ExtractOptions
from client.outputs import OutputDir, film_fingerprint
from client.pipeline.chunked import ChunkedShotSource
from client.pipeline.sinks import FramesWriter, Outputs, Poster, Sink
from client.pipeline.source import ShotSource
from client.progress import Progress

if TYPE_CHECKING:  # httpx, which the shots command never needs, is imported with client.api
    from client.api import ServerPool

log = logging.getLogger("client.pipeline")


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


def manifest(command: str, info: VideoInfo, settings: dict[str, Any]) -> dict[str, Any]:
    """The run.json of a run: its identity (format, command, film fingerprint and output
    settings, compared on resume) and ``source`` (the film's absolute path, exact frame rate,
    size and drop-frame flag, for exports), which is not compared: a moved film resumes, and
    the resume records where it is now."""
    return {
        # 3: shots carry SMPTE timecodes and analyze records the server's blocks and frames/;
        # 2: frame numbers are the decoded frame index, times the frames' timestamps, and shots
        # carry audio_error. An older run is not resumed into (--force starts over).
        "format": 3,
        "command": command,
        "film": {"name": info.path.name, **film_fingerprint(info.path)},
        "settings": settings,
        "source": info.source_record(),
    }


def diagnostics(source: ShotSource, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What run.json reports about damage met in this pass: video decode errors and dropped
    frames, and the audio's errors with the number of shots left without audio features."""
    audio = source.audio_report()
    if audio is not None:
        errored = [r for r in records if r.get("audio_error")]
        audio = {**audio, "shots_with_audio_error": len(errored)}
        if audio["error"] is None and errored:  # only from an earlier, interrupted pass
            audio["error"] = errored[0]["audio_error"]
    return {"video_decode": source.scanner.stats.as_record(), "audio_error": audio}


def warn_about_damage(name: str, report: dict[str, Any]) -> None:
    """One stderr line per kind of damage, so a damaged film is never reported as clean."""
    video = report["video_decode"]
    if video["corrupt_packets"] or video["dropped_frames"]:
        log.warning(
            "%s: %d corrupt video packet(s); %d frame(s) could not be decoded (%.1f %%); "
            "see run.json",
            name,
            video["corrupt_packets"],
            video["dropped_frames"],
            100 * video["dropped_fraction"],
        )
    audio = report["audio_error"]
    if audio is not None and audio["error"] and not audio["shots_with_audio_error"]:
        # E.g. an audio track that stops a fraction of a second before the picture: reported,
        # but not as a failure, since every shot kept its audio features.
        log.warning(
            "%s: %.2f s of audio missing (%s); every shot still has its audio features "
            "(see audio_error in run.json)",
            name,
            audio.get("missing_seconds") or 0.0,
            audio["error"],
        )
    elif audio is not None and audio["error"]:
        log.warning(
            "%s: audio decoding failed (%s); %d shot(s) have no audio features (audio_error)",
            name,
            audio["error"],
            audio["shots_with_audio_error"],
        )


@dataclass
class Run:
    """One command's pass: ``outputs`` is the results folder, ``sink`` consumes the source
    (``FramesWriter`` or ``Poster``); ``on_start`` runs once the run is known to need the
    source (e.g. dropping unreachable servers). ``workers`` > 1 decodes in that many processes
    (``ChunkedShotSource``: the same shots); 1 is the one-pass ``ShotSource``, decoded in this
    process unless ``decode_in_process`` is False (one worker process: a server job)."""

    command: str
    info: VideoInfo
    options: ExtractOptions
    outputs: Outputs
    sink: Sink
    progress: Progress | None = None
    force: bool = False
    on_start: Callable[[], None] | None = None
    workers: int = 1
    decode_in_process: bool = True

    def source(self, done: set[int] | frozenset[int]) -> ShotSource:
        """The run's shot source (resume: ``done`` shots are detected, not prepared)."""
        if self.workers > 1 or not self.decode_in_process:
            return ChunkedShotSource(
                self.info,
                self.options,
                self.workers,
                skip=done,
                progress=self.progress,
                one_pass_here=self.decode_in_process,
            )
        return ShotSource(self.info, self.options, skip=done, progress=self.progress)

    def execute(self) -> RunReport:
        """Run to the end and report; the source and the progress bar are closed on every
        exit path, so no thread of the run outlives this call."""
        started = time.monotonic()
        out = self.outputs.dir
        old = out.manifest()
        done = out.prepare(manifest(self.command, self.info, self.outputs.settings), self.force)
        if old is not None and old.get("complete") and not self.force and done:
            return self._already_complete(started)
        if done:
            log.info("resuming: %d shots already done in %s", len(done), out.path)
        if self.on_start is not None:
            self.on_start()
        source = self.source(done)
        try:
            written = self.sink.consume(source)
        finally:
            source.close()
            if self.progress is not None:
                self.progress.close()
        return self._report(source, started, written, resumed=len(done))

    def _already_complete(self, started: float) -> RunReport:
        """Same film and settings, already finished: just make sure the final files exist."""
        records = self.outputs.finish(self.info, expected=None)
        return RunReport(
            film=self.info.path.name,
            out=self.outputs.dir.path,
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

    def _report(self, source: ShotSource, started: float, written: int, resumed: int) -> RunReport:
        """Check the pass, write the final files, warn about damage and report."""
        stats = source.scanner.stats
        if stats.stopped_early:
            raise ClientError("decoding stopped before the end of the film")
        damage = diagnostics(source, self.outputs.dir.records())
        records = self.outputs.finish(self.info, source.shot_ids, damage)
        warn_about_damage(self.info.path.name, damage)
        return RunReport(
            film=self.info.path.name,
            out=self.outputs.dir.path,
            shots=len(records),
            written_now=written,
            resumed=resumed,
            frames=stats.frames,
            duration=records[-1]["end_time"] if records else 0.0,
            elapsed=time.monotonic() - started,
            corrupt_packets=stats.corrupt_packets,
            dropped_frames=stats.dropped_frames,
            audio_errors=sum(1 for r in records if r.get("audio_error")),
            records=records,
        )


def extract(
    info: VideoInfo,
    out_dir: str | Path,
    options: ExtractOptions,
    progress: Progress | None = None,
    force: bool = False,
    workers: int = 1,
) -> RunReport:
    """The ``shots`` command: detect shots, write sample JPEGs, audio features, shots.jsonl,
    shots.csv and summary.json. No server involved. Resumable like ``analyze``. ``workers``:
    decode processes (``Run.workers``)."""
    outputs = Outputs(OutputDir(out_dir), options.output_settings(), False, progress)
    run = Run(
        "shots", info, options, outputs, FramesWriter(outputs), progress, force, workers=workers
    )
    return run.execute()


def analyze(
    info: VideoInfo,
    out_dir: str | Path,
    options: ExtractOptions,
    servers: ServerPool,
    session_id: str | None,
    title: str | None,
    progress: Progress | None = None,
    force: bool = False,
    attributes: AttributeRequest | None = None,
    frames: bool = True,
    workers: int = 1,
    decode_in_process: bool = True,
) -> RunReport:
    """The ``analyze`` command: extract shots and have the servers analyse them in batches,
    writing results as they come (resumable; see the module doc).

    ``attributes`` (None: the server's vocabulary) is part of the run's settings in run.json, as
    sent: a resume with another vocabulary, order, description or evidence is refused like any
    other change of settings (``--force`` starts over). ``frames`` False (``--no-frames``)
    writes no JPEGs to frames/; it is a setting too (records then have no ``images``).
    ``workers``: decode processes (``Run.workers``, ``Run.decode_in_process``).
    """
    settings = {
        **options.output_settings(),
        "session_id": session_id,
        "title": title,
        "attributes": attributes.output_setting() if attributes is not None else None,
        "frames": frames,
    }
    names = attributes.names if attributes is not None else None
    outputs = Outputs(OutputDir(out_dir), settings, True, progress, names)
    poster = Poster(servers, outputs, session_id, title, attributes, frames)
    if progress is not None:
        servers.on_wait = progress.status
    run = Run(
        "analyze",
        info,
        options,
        outputs,
        poster,
        progress,
        force,
        on_start=servers.drop_unreachable,
        workers=workers,
        decode_in_process=decode_in_process,
    )
    return dataclasses.replace(run.execute(), servers=servers.summary())
