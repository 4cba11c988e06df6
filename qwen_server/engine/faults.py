"""Fault classification: out-of-memory, errors that leave a GPU unusable, path-free messages.

``is_oom`` batches are retried in halves (see ``generation``); ``is_fatal`` errors retire a
replica; ``describe_error`` / ``scrub_paths`` are what callers and /health see of any error.
"""

from __future__ import annotations

import re

import torch


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


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
