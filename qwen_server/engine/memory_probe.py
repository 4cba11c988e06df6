"""The start-up memory probe behind ``batching.max_batch_size: auto`` (like vLLM's profiling run).

After the weights are loaded and warmed up, every replica runs the worst case the server
accepts - shots of ``server.max_images_per_shot`` frames at ``model.max_pixels``, answers forced
to their whole token budget in the server's vocabulary - once as a batch of 1 and once as a
batch of ``PROBE_BATCH``. The peak memory each batch needed above what was allocated before it
gives a per-shot cost and a fixed cost (the two-point line through them: the fixed part is what
does not grow with the batch, e.g. workspaces). The chosen size is the largest batch whose
projected peak fits the memory left free, minus a safety margin, on every device the replica
uses, and at most ``AUTO_CEILING``; the smallest over replicas wins (one queue feeds them all).

Measured with ``torch.cuda.max_memory_allocated`` / ``mem_get_info`` on CUDA. On the CPU the
same run is measured in resident memory: the peak (VmHWM, reset through
``/proc/self/clear_refs``) against ``MemAvailable``. That is coarser (the allocator keeps some
freed memory, other threads allocate too) but real, and it lets the CPU tests run the whole path.
Where neither works, ``CPU_FALLBACK`` is used and logged.

Per-request vocabularies larger than the server's and prompts longer than the probe's are not
foreseen: a batch that then runs out of memory lowers the batch cap (``batch_cap``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import PIL.Image
import torch

from ..config import Settings
from .faults import describe_error, detached, is_oom
from .inputs import ShotPreparer
from .types import PreparedShot, ShotInput

logger = logging.getLogger("qwen_server.engine")

AUTO_CEILING = 256  # "auto" never picks more: HF generate gains little past this on one GPU
PROBE_BATCH = 4  # the second probe batch (the first is 1 shot)
SAFETY_MARGIN = 0.10  # fraction of the free memory left unused (fragmentation, other users)
CUDA_HEADROOM_BYTES = 1 << 30  # kept free besides: cuBLAS/cuDNN workspaces, NCCL, the driver
CPU_HEADROOM_BYTES = 2 << 30  # the OS, the HTTP server, decoding threads
CPU_FALLBACK = 8  # when the CPU's memory cannot be measured

_WORST_AUDIO = (
    "speech: dialogue over loud music with a steady beat, crowd noise and an explosion; "
    "loudness -14 LUFS, tempo 128 BPM"
)


def choose_batch_size(
    *,
    free_bytes: int,
    per_shot_bytes: float,
    fixed_bytes: float,
    headroom_bytes: int,
    margin: float = SAFETY_MARGIN,
    ceiling: int = AUTO_CEILING,
) -> int:
    """The largest batch ``n`` with ``fixed + n * per_shot <= free * (1 - margin) - headroom``,
    within 1..ceiling (1 when not even one shot fits: smaller shots may still run)."""
    budget = free_bytes * (1.0 - margin) - headroom_bytes - max(0.0, fixed_bytes)
    if per_shot_bytes <= 0:
        return ceiling
    return int(max(1, min(ceiling, math.floor(budget / per_shot_bytes))))


def line_through(peaks: dict[int, int]) -> tuple[float, float]:
    """(per-shot, fixed) bytes of the line through the peaks measured at two batch sizes."""
    (n1, p1), (n2, p2) = sorted(peaks.items())[:2]
    per_shot = max(0.0, (p2 - p1) / (n2 - n1))
    # At least the per-shot figure of the largest batch alone, should the line come out flat.
    per_shot = max(per_shot, p2 / n2 / 2)
    return per_shot, max(0.0, p1 - n1 * per_shot)


class MemoryMeter(Protocol):
    """Peak and free memory of the devices one replica uses."""

    headroom_bytes: int

    def start(self) -> None:
        """Free what can be freed and restart the peak counters; sets the baseline."""
        ...

    def peaks(self) -> list[int]:
        """Per device: the peak since ``start`` above the baseline, in bytes."""
        ...

    def free(self) -> list[int]:
        """Per device: bytes free now (after freeing what the probe left cached)."""
        ...


class CudaMeter:
    """``torch.cuda`` allocator statistics of the given GPUs."""

    headroom_bytes = CUDA_HEADROOM_BYTES

    def __init__(self, gpus: list[int]) -> None:
        self.gpus = gpus
        self._base: list[int] = []

    def start(self) -> None:
        gc.collect()
        for gpu in self.gpus:
            torch.cuda.synchronize(gpu)
        torch.cuda.empty_cache()
        self._base = []
        for gpu in self.gpus:
            torch.cuda.reset_peak_memory_stats(gpu)
            self._base.append(torch.cuda.memory_allocated(gpu))

    def peaks(self) -> list[int]:
        for gpu in self.gpus:
            torch.cuda.synchronize(gpu)
        return [
            torch.cuda.max_memory_allocated(gpu) - base
            for gpu, base in zip(self.gpus, self._base, strict=True)
        ]

    def free(self) -> list[int]:
        gc.collect()
        torch.cuda.empty_cache()
        return [int(torch.cuda.mem_get_info(gpu)[0]) for gpu in self.gpus]


class CpuMeter:
    """Resident memory of this process (Linux /proc): peak via VmHWM, free via MemAvailable."""

    headroom_bytes = CPU_HEADROOM_BYTES

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._base = 0

    def available(self) -> bool:
        """Whether this kernel lets the peak be measured (and reset)."""
        try:
            (self.proc / "self" / "clear_refs").write_text("5")
            return self._status_kb("VmHWM") > 0 and self._meminfo_kb("MemAvailable") > 0
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        gc.collect()
        (self.proc / "self" / "clear_refs").write_text("5")  # VmHWM := VmRSS
        self._base = self._status_kb("VmRSS") * 1024

    def peaks(self) -> list[int]:
        return [max(0, self._status_kb("VmHWM") * 1024 - self._base)]

    def free(self) -> list[int]:
        gc.collect()
        return [self._meminfo_kb("MemAvailable") * 1024]

    def _status_kb(self, key: str) -> int:
        return _field_kb((self.proc / "self" / "status").read_text(), key)

    def _meminfo_kb(self, key: str) -> int:
        return _field_kb((self.proc / "meminfo").read_text(), key)


def _field_kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise ValueError(f"{key} not found")


@dataclass
class ProbeResult:
    """What the probe measured on one replica and the batch size it leads to."""

    chosen: int
    per_shot_bytes: float
    fixed_bytes: float
    free_bytes: int  # on the tightest device
    prompt_tokens: int
    new_tokens: int

    def describe(self) -> str:
        mib = 1 << 20
        return (
            f"{self.chosen} (per shot {self.per_shot_bytes / mib:.1f} MiB + fixed "
            f"{self.fixed_bytes / mib:.1f} MiB at the worst case of {self.prompt_tokens} prompt "
            f"and {self.new_tokens} answer tokens; {self.free_bytes / mib:.0f} MiB free, "
            f"{SAFETY_MARGIN:.0%} margin, ceiling {AUTO_CEILING})"
        )


def worst_case_shot(settings: Settings, preparer: ShotPreparer) -> PreparedShot:
    """The largest shot the server accepts, unconstrained, with its whole answer budget."""
    side = max(28, math.isqrt(settings.model.max_pixels))
    frame = PIL.Image.new("RGB", (side, side), (90, 60, 30))
    vocabulary = settings.analysis.vocabulary
    shot = preparer.prepare(
        ShotInput(
            shot_id=0,
            frames=[frame] * settings.server.max_images_per_shot,
            duration=10.0,
            audio_summary=_WORST_AUDIO,
            vocabulary=vocabulary,
        )
    )
    # Unconstrained: a grammar would end the answer early; exact_length makes it run full.
    return dataclasses.replace(
        shot, grammar=None, max_new_tokens=preparer.answer_tokens(vocabulary.names)
    )


def probe_replica(generator: Any, meter: MemoryMeter, shot: PreparedShot) -> ProbeResult:
    """Run the worst case at batch 1 and ``PROBE_BATCH`` on one replica and choose a size.

    A probe batch that runs out of memory is retried smaller (outside the ``except``, so its
    memory is freed first); when even one shot does not fit, 1 is chosen.
    """
    peaks: dict[int, list[int]] = {}
    if not _measure(generator, meter, shot, 1, peaks):
        return ProbeResult(1, 0.0, 0.0, 0, len(shot.input_ids), shot.max_new_tokens)
    size = PROBE_BATCH
    while size > 1 and not _measure(generator, meter, shot, size, peaks):
        size //= 2  # an OOM: try a smaller second point
    free = meter.free()
    best: ProbeResult | None = None
    for device, free_bytes in enumerate(free):
        per_device = {n: p[device] for n, p in peaks.items()}
        if len(per_device) >= 2:
            per_shot, fixed = line_through(per_device)
        else:  # only batch 1 fitted: all of it counts per shot
            per_shot, fixed = float(per_device[1]), 0.0
        chosen = choose_batch_size(
            free_bytes=free_bytes,
            per_shot_bytes=per_shot,
            fixed_bytes=fixed,
            headroom_bytes=meter.headroom_bytes,
        )
        if best is None or chosen < best.chosen:
            best = ProbeResult(
                chosen, per_shot, fixed, free_bytes, len(shot.input_ids), shot.max_new_tokens
            )
    assert best is not None
    return best


def _measure(
    generator: Any, meter: MemoryMeter, shot: PreparedShot, size: int, peaks: dict[int, list[int]]
) -> bool:
    """Peak of one probe batch into ``peaks[size]``; False (memory freed) on an OOM."""
    meter.start()
    failed = _generate(generator, [shot] * size)
    if failed is None:
        peaks[size] = meter.peaks()
        return True
    logger.warning("memory probe: a batch of %d worst-case shots ran out of memory", size)
    meter.free()  # collects and empties the cache: the failed batch's memory comes back
    return False


def _generate(generator: Any, shots: list[PreparedShot]) -> str | None:
    """None on success, the description of an out-of-memory error (other errors raise)."""
    try:
        generator.generate(shots, exact_length=True)
    except Exception as exc:
        if not is_oom(exc):
            raise
        return describe_error(detached(exc))  # a string: nothing of the failed batch is kept
    return None


def meter_for(device: str, gpus: list[int]) -> MemoryMeter | None:
    """The meter for a replica on ``device`` using ``gpus`` (None: cannot measure here)."""
    if device == "cuda":
        return CudaMeter(gpus)
    cpu = CpuMeter()
    return cpu if cpu.available() else None


def resolve_batch_size(
    settings: Settings, device: str, replicas: list[Any], preparer: ShotPreparer
) -> int:
    """``batching.max_batch_size``, probing the replicas when it is ``auto``; logs the choice.

    ``replicas`` are ``replicas.Replica`` objects (generator and GPU); with ``shard`` placement
    (one replica, no GPU of its own) every visible GPU is measured.
    """
    configured = settings.batching.max_batch_size
    if configured != "auto":
        return int(configured)
    shot = worst_case_shot(settings, preparer)
    chosen = AUTO_CEILING
    for replica in replicas:
        gpus: list[int] = []
        if device == "cuda":
            gpus = (
                [replica.gpu] if replica.gpu is not None else list(range(torch.cuda.device_count()))
            )
            if replica.gpu is not None:
                torch.cuda.set_device(replica.gpu)
        meter = meter_for(device, gpus)
        if meter is None:
            logger.warning(
                "batching.max_batch_size auto: memory cannot be measured here; using %d",
                CPU_FALLBACK,
            )
            return CPU_FALLBACK
        result = probe_replica(replica.generator, meter, shot)
        logger.info(
            "batching.max_batch_size auto: replica %d (%s) fits %s",
            replica.index,
            f"GPU {','.join(map(str, gpus))}" if gpus else "CPU",
            result.describe(),
        )
        chosen = min(chosen, result.chosen)
    logger.info("batching.max_batch_size auto -> %d shots per batch", chosen)
    return chosen
