"""One analysis request from validated shots to fused results.

Steps: check configured limits and resolve each shot's attribute vocabulary (its own
``attributes``, else the request's, else the server's) → admission (the engine holds queue
room, or refuses with 503 + Retry-After, before any frame is decoded) → decode frames and
measure signals (thread pool) → audio cues → batched model generation (engine queue) → fusion.
Kept apart from the routes so `/analyze` and `/analyze_batch` share one path.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from PIL import Image

from ..config import Settings
from ..contract.analysis import (
    CLIP_FRAMES_DEFAULT,
    AttributeDefinition,
    GenerationCounts,
    MeasuredSignals,
    ShotIn,
    ShotInputs,
    ShotResult,
    Timings,
)
from ..contract.vocabulary import Vocabulary, VocabularyError, resolve_requested
from ..engine.protocol import EngineClient
from ..engine.types import ShotInput
from ..errors import InvalidInput
from .audio_cues import audio_cues
from .clips import ClipLimits, base64_size, decode_clip, over_size
from .fusion import fuse
from .images import decode_image
from .signals import measure


@dataclass
class _Prepared:
    frames: list[Image.Image]
    measured: MeasuredSignals
    decode_ms: float
    inputs: ShotInputs


def check_limits(shots: list[ShotIn], settings: Settings) -> None:
    """Refuse requests over the configured shot and frame limits, naming the limit."""
    limit = settings.server.max_shots_per_request
    if len(shots) > limit:
        raise InvalidInput(
            f"too many shots in one request: {len(shots)} > {limit} (server.max_shots_per_request)"
        )
    max_images = settings.server.max_images_per_shot
    max_clip = int(settings.server.max_clip_mb * 1_048_576)
    for shot in shots:
        if shot.images is not None and len(shot.images) > max_images:
            raise InvalidInput(
                f"shot {shot.shot_id}: {len(shot.images)} images > {max_images} "
                "(server.max_images_per_shot)"
            )
        if shot.video is not None:
            # Cheap checks before admission; the clip's length is measured when it is read.
            count = shot.frames_per_shot or CLIP_FRAMES_DEFAULT
            if count > max_images:
                raise InvalidInput(
                    f"shot {shot.shot_id}: frames_per_shot {count} > {max_images} "
                    "(server.max_images_per_shot)"
                )
            if base64_size(shot.video) > max_clip + 3:
                size = over_size(base64_size(shot.video), max_clip, "about ")
                raise InvalidInput(f"shot {shot.shot_id} video: {size}")


Requested = list[str | AttributeDefinition]


def _resolve(requested: Requested, known: Vocabulary, where: str) -> Vocabulary:
    items = [a if isinstance(a, str) else a.as_request_item() for a in requested]
    try:
        return resolve_requested(items, known)
    except VocabularyError as exc:
        raise InvalidInput(f"{where}{exc}") from None


def shot_vocabularies(
    shots: list[ShotIn], requested: Requested | None, known: Vocabulary
) -> list[Vocabulary]:
    """Each shot's vocabulary: its own ``attributes``, else the request's, else ``known`` (the
    server's). Raises InvalidInput naming the shot and the attribute at fault."""
    default = _resolve(requested, known, "") if requested is not None else known
    out: list[Vocabulary] = []
    seen: dict[str, Vocabulary] = {}  # identical per-shot lists are resolved once
    for shot in shots:
        if shot.attributes is None:
            out.append(default)
            continue
        key = repr(shot.attributes)
        if key not in seen:
            seen[key] = _resolve(shot.attributes, known, f"shot {shot.shot_id}: ")
        out.append(seen[key])
    return out


def _prepare(shot: ShotIn, limits: ClipLimits) -> _Prepared:
    t0 = time.perf_counter()
    if shot.video is not None:
        frames, clip = decode_clip(
            shot.video,
            count=shot.frames_per_shot or CLIP_FRAMES_DEFAULT,
            limits=limits,
            where=f"shot {shot.shot_id} video",
        )
        inputs = ShotInputs(source="video", frames=len(frames), clip=clip)
    else:
        frames = [
            decode_image(
                data,
                max_pixels=limits.max_pixels,
                keep_pixels=limits.keep_pixels,
                where=f"shot {shot.shot_id} image {i}",
            )
            for i, data in enumerate(shot.images or [])
        ]
        inputs = ShotInputs(source="images", frames=len(frames))
    measured = measure(frames)
    return _Prepared(frames, measured, (time.perf_counter() - t0) * 1000.0, inputs)


async def analyze_shots(
    shots: list[ShotIn],
    *,
    settings: Settings,
    engine: EngineClient,
    pool: Executor,
    attributes: Requested | None = None,
) -> list[ShotResult]:
    """Analyse shots and return results in the same order (raises domain errors).

    ``attributes`` is the request's attribute list (``AnalyzeBatchRequest.attributes``)."""
    check_limits(shots, settings)
    vocabularies = shot_vocabularies(shots, attributes, settings.analysis.vocabulary)
    loop = asyncio.get_running_loop()
    # Frames are kept no larger than the image processor would make them anyway (keep_pixels).
    limits = ClipLimits(
        max_bytes=int(settings.server.max_clip_mb * 1_048_576),
        max_seconds=settings.server.max_clip_seconds,
        max_pixels=settings.server.max_image_pixels,
        keep_pixels=settings.model.max_pixels,
    )
    # The engine alone decides admission: it holds queue room for these shots (waiting in its
    # first-come-first-served line if need be) or refuses with its own Retry-After, before a
    # single frame is decoded; the room is used by analyze() or given back on error.
    async with engine.admit(len(shots)) as admission:
        prepared = await asyncio.gather(
            *(loop.run_in_executor(pool, _prepare, s, limits) for s in shots)
        )
        cues = [audio_cues(shot.audio_features, shot.duration) for shot in shots]
        inputs = [
            ShotInput(
                shot_id=shot.shot_id,
                frames=prep.frames,
                duration=shot.duration,
                audio_summary=cue.summary if cue is not None else None,
                vocabulary=vocab,
            )
            for shot, prep, cue, vocab in zip(shots, prepared, cues, vocabularies, strict=True)
        ]
        outputs = await engine.analyze(inputs, admission)
    results = []
    for shot, prep, cue, out, vocab in zip(
        shots, prepared, cues, outputs, vocabularies, strict=True
    ):
        fused = fuse(out.scores, prep.measured, cue, settings.fusion, vocab)
        results.append(
            ShotResult(
                shot_id=shot.shot_id,
                caption=out.caption,
                attributes=fused.scores,
                audio_class=cue.audio_class if cue is not None else "unknown",
                model_attributes={name: out.scores[name] for name in vocab.names},
                evidence=fused.evidence,
                measured=prep.measured,
                inputs=prep.inputs,
                audio=cue,
                start_time=shot.start_time,
                end_time=shot.end_time,
                duration=shot.duration,
                model=engine.model_id,
                timings_ms=Timings(decode_ms=round(prep.decode_ms, 2), **out.timings_ms),
                generation=GenerationCounts(**out.counts),
                # What the model's answer lacked and was filled with neutral values: flagged,
                # never passed off as the model's reading.
                fallback=list(out.fallback),
            )
        )
    return results
