"""Fault classification: out-of-memory, errors that leave a GPU unusable, path-free messages.

``is_oom`` batches are retried in halves (see ``generation``); ``is_fatal`` errors retire a
replica; ``describe_error`` / ``scrub_paths`` are what callers and /health see of any error;
``detached`` is the traceback-free copy of an error that may be kept after it was handled.
"""

from __future__ import annotations

import re
import traceback

import torch

# What allocators say when they run out: CUDA/MPS ("out of memory") and the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory", a plain RuntimeError).
_OOM_MARKERS = ("out of memory", "can't allocate memory", "Cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """Out of memory on any device: torch.OutOfMemoryError (= torch.cuda.OutOfMemoryError),
    Python's MemoryError, or a RuntimeError carrying an allocator's out-of-memory message."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MARKERS)


def detached(exc: BaseException) -> BaseException:
    """A copy of ``exc`` that holds no frames, for keeping after the ``except`` block ends.

    A raised exception's traceback holds every frame it passed through, and with them their
    locals: for a failed ``generate`` that is the batch's activations and inputs, which then
    stay allocated for as long as the exception is kept. The original's frames are cleared
    (their locals dropped) and a new exception of the same type and message, never raised and
    so without traceback, cause or context, is returned (a RuntimeError naming the type when
    the type cannot be built from a message).
    """
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
    message = str(exc)
    try:
        copy = type(exc)(message)
    except Exception:  # types whose constructor wants more than a message
        copy = RuntimeError(f"{type(exc).__name__}: {message}")
    return copy


_FATAL_MARKERS = (
    "CUDA error",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUDNN_STATUS_EXECUTION_FAILED",
    "NCCL error",
    "ECC error",
    "device lost",
    "no CUDA-capable device",
)


def is_fatal(exc: BaseException) -> bool:
    """Errors after which the GPU (CUDA context) cannot be trusted: retire the replica."""
    if is_oom(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return any(marker in str(exc) for marker in _FATAL_MARKERS)


# An absolute filesystem path (not a hub id like "Qwen/Qwen2-VL-2B", not the "//" of a URL).
_PATH_RE = re.compile(r"(?<![\w.:/])/(?:[\w.\-]+/)*[\w.\-]+")


def scrub_paths(text: str) -> str:
    """Replace filesystem paths: messages reach callers and /health, which must not show them."""
    return _PATH_RE.sub("<path>", text)


def describe_error(exc: BaseException) -> str:
    """Short, path-free description for callers and /health."""
    lines = str(exc).strip().splitlines()
    first = scrub_paths(lines[0][:200]) if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
