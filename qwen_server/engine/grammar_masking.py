"""Applying a packed grammar bitmask to a batch of logits, on CUDA or the CPU.

A finished row's next token is the pad token whatever its logits say. On CUDA xgrammar's fused
kernel masks every row in one launch; on CPU xgrammar's kernel masks the live rows only (a pass
over (batch, vocab) float32 logits is memory-bound: 33-54 ms at batch 64 x 151,936 measured
before, on a 2-core machine).
"""

from __future__ import annotations

import logging

import torch
import xgrammar as xgr

logger = logging.getLogger("qwen_server.structured")


def apply_bitmask_cpu(scores: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Set to -inf, in place, every logit of ``rows`` whose bit in ``bitmask`` is clear.

    xgrammar's CPU kernel, on the live rows only. Measured on this 2-core CPU at batch 64 x
    151,936 (scripts/bench_grammar.py), a LUT unpack + ``masked_fill``, a vectorized bit
    expansion and a per-row memset + scatter of the few allowed logits were all slower than the
    kernel: the pass over the whole float32 tensor is memory-bound whatever does it.
    """
    if not rows:
        return
    work = scores if scores.dtype == torch.float32 else scores.float()  # the kernel's dtype
    xgr.apply_token_bitmask_inplace(work, bitmask, vocab_size=scores.shape[1], indices=rows)
    if work is not scores:
        scores.copy_(work)


def apply_bitmask(
    scores: torch.Tensor, mask: torch.Tensor, rows: list[int], vocab_size: int
) -> torch.Tensor:
    """Mask ``scores`` with ``mask`` (already on ``scores``' device when CUDA) in ``rows``."""
    if scores.device.type == "cuda":
        # Every row, as before: one fused launch, and no reliance on each backend's ``indices``
        # support. A finished row keeps the last mask it had, which allowed its stop token, so
        # sampling never sees a row of -inf.
        _apply_mask_cuda(scores, mask, vocab_size)
        return scores
    work = scores if scores.device.type == "cpu" else scores.to("cpu")
    apply_bitmask_cpu(work, mask, rows)
    return work if work is scores else work.to(scores.device)


# xgrammar's CUDA masking backends, fastest first. Triton ships with CUDA builds of torch but is
# not guaranteed; "torch_native" is plain torch and always works. The first that works is kept.
_CUDA_BACKENDS = ["triton", "cuda", "torch_native"]
_cuda_backend: str | None = None


def _apply_mask_cuda(
    scores: torch.Tensor, mask: torch.Tensor, vocab_size: int, rows: list[int] | None = None
) -> None:
    global _cuda_backend
    indices = None if rows is None or len(rows) == scores.shape[0] else rows
    if _cuda_backend is not None:
        xgr.apply_token_bitmask_inplace(
            scores, mask, vocab_size=vocab_size, indices=indices, backend=_cuda_backend
        )
        return
    last_error: Exception | None = None
    for backend in _CUDA_BACKENDS:
        try:
            xgr.apply_token_bitmask_inplace(
                scores, mask, vocab_size=vocab_size, indices=indices, backend=backend
            )
        except Exception as exc:  # missing triton, kernel build failure, ...
            logger.warning("xgrammar %s masking unavailable (%s); trying the next", backend, exc)
            last_error = exc
            continue
        _cuda_backend = backend
        logger.info("grammar masking on CUDA uses xgrammar's %s backend", backend)
        return
    raise RuntimeError(f"no xgrammar CUDA masking backend works: {last_error}")
