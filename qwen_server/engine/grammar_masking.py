"""Applying a packed grammar bitmask to a batch of logits: fused on CUDA, vectorized on CPU.

Only the rows still generating are masked (a finished row's next token is the pad token
whatever its logits say). On CUDA xgrammar's fused kernel does the work. On CPU xgrammar's
kernel walks every bit (33-54 ms at batch 64 x 151,936 measured before); here a row that allows
few tokens (a score, a name: most steps) keeps just those and fills the rest with -inf, and a row
that allows many (the caption) is masked with one vectorized bit expansion.
"""

from __future__ import annotations

import logging

import torch
import xgrammar as xgr

logger = logging.getLogger("qwen_server.structured")

# Bit i of a word, as int32 (bit 31 is the sign bit).
_BITS = (1 << torch.arange(32, dtype=torch.int64)).to(torch.int32)
# A row is "sparse" when at most this share of its words has an allowed token.
_SPARSE_SHARE = 16


def apply_bitmask_cpu(scores: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Set to -inf, in place, every logit of ``rows`` whose bit in ``bitmask`` is clear.

    ``scores`` is ``(batch, vocab)`` on the CPU (any float dtype); ``bitmask`` is xgrammar's
    ``(batch, ceil(vocab/32))`` int32 layout. Same result as ``xgr.apply_token_bitmask_inplace``.
    """
    if not rows:
        return
    vocab = scores.shape[1]
    index = torch.tensor(rows, dtype=torch.int64)
    words = bitmask[index]
    nonzero = words != 0
    sparse = nonzero.sum(dim=1) * _SPARSE_SHARE <= words.shape[1]
    if bool(sparse.any()):
        _apply_sparse(scores, index[sparse], words[sparse], nonzero[sparse], vocab)
    dense = ~sparse
    if bool(dense.any()):
        blocked = ((words[dense][:, :, None] & _BITS) == 0).view(int(dense.sum()), -1)[:, :vocab]
        dense_rows = index[dense]
        if len(dense_rows) == scores.shape[0]:  # every row, in order: mask in place
            scores.masked_fill_(blocked, float("-inf"))
        else:
            scores[dense_rows] = scores[dense_rows].masked_fill(blocked, float("-inf"))


def _apply_sparse(
    scores: torch.Tensor,
    rows: torch.Tensor,
    words: torch.Tensor,
    nonzero: torch.Tensor,
    vocab: int,
) -> None:
    """Rows allowing few tokens: save those logits, fill the rows with -inf, put them back."""
    row_of, word_of = nonzero.nonzero(as_tuple=True)
    hit, bit = ((words[row_of, word_of][:, None] & _BITS) != 0).nonzero(as_tuple=True)
    token = word_of[hit] * 32 + bit
    row = rows[row_of[hit]]
    keep = token < vocab
    row, token = row[keep], token[keep]
    kept = scores[row, token]
    scores[rows] = float("-inf")
    scores[row, token] = kept


def apply_bitmask(
    scores: torch.Tensor, mask: torch.Tensor, rows: list[int], vocab_size: int
) -> torch.Tensor:
    """Mask ``scores`` with ``mask`` (already on ``scores``' device when CUDA) in ``rows``."""
    if scores.device.type == "cuda":
        _apply_mask_cuda(scores, mask, vocab_size, rows)
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
