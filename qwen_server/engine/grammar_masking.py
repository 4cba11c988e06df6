"""Applying a packed grammar bitmask to a batch of logits: fused on CUDA, vectorized on CPU.

Only the rows still generating are masked (a finished row's next token is the pad token
whatever its logits say). On CUDA xgrammar's fused kernel does the work. On CPU xgrammar's
kernel walks every bit (33-54 ms at batch 64 x 151,936 measured before); here a row that allows
few tokens (a score, a name: most steps) keeps just those and fills the rest with -inf (a
memset), and only a row that allows many (the caption) goes through xgrammar's kernel.
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

    ``scores`` is ``(batch, vocab)`` float32 on the CPU; ``bitmask`` is xgrammar's
    ``(batch, ceil(vocab/32))`` int32 layout. Same result as ``xgr.apply_token_bitmask_inplace``.
    """
    if not rows:
        return
    vocab = scores.shape[1]
    index = torch.tensor(rows, dtype=torch.int64)
    words = bitmask[index]
    nonzero = words != 0
    sparse = (nonzero.sum(dim=1) * _SPARSE_SHARE <= words.shape[1]).tolist()
    sparse_rows = [r for r, s in zip(rows, sparse, strict=True) if s]
    dense_rows = [r for r, s in zip(rows, sparse, strict=True) if not s]
    if sparse_rows:
        pick = torch.tensor([i for i, s in enumerate(sparse) if s], dtype=torch.int64)
        _apply_sparse(scores, sparse_rows, index[pick], words[pick], nonzero[pick], vocab)
    if dense_rows:
        xgr.apply_token_bitmask_inplace(scores, bitmask, vocab_size=vocab, indices=dense_rows)


def _apply_sparse(
    scores: torch.Tensor,
    rows: list[int],
    row_index: torch.Tensor,
    words: torch.Tensor,
    nonzero: torch.Tensor,
    vocab: int,
) -> None:
    """Rows allowing few tokens: save those logits, fill the rows with -inf, put them back."""
    row_of, word_of = nonzero.nonzero(as_tuple=True)
    hit, bit = ((words[row_of, word_of][:, None] & _BITS) != 0).nonzero(as_tuple=True)
    token = word_of[hit] * 32 + bit
    row = row_index[row_of[hit]]
    keep = token < vocab
    row, token = row[keep], token[keep]
    kept = scores[row, token]
    if len(rows) == scores.shape[0]:
        scores.fill_(float("-inf"))
    else:
        for r in rows:  # a memset per row: cheaper than an indexed fill
            scores[r].fill_(float("-inf"))
    scores[row, token] = kept


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
