"""The xgrammar logits processor: per-row grammar masks applied inside ``generate``.

Each row of a batch has its own compiled grammar (a batch may mix attribute vocabularies, see
``grammar``); xgrammar's processors are single-use, so every ``generate`` call gets a new one.
"""

from __future__ import annotations

import logging

import torch
import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor as XgrLogitsProcessor

logger = logging.getLogger("qwen_server.structured")


class GrammarLogitsProcessor(XgrLogitsProcessor):
    """xgrammar's transformers processor with fewer host-device round trips; single use.

    Differences from the parent, all about speed or robustness, not semantics:

    * the last sampled token of every row is read with ONE ``tolist()`` per step (the parent
      calls ``.item()`` per row, a device sync each);
    * masks of large batches are filled by xgrammar's multi-threaded ``BatchGrammarMatcher``;
    * the bitmask is copied to the logits' device without blocking the host;
    * a row whose token the grammar rejects (only possible with NaN logits or a foreign logits
      processor) is not an assertion error that kills the whole batch: it is forced to stop and
      its text goes to the defensive parser.
    """

    _BATCH_FILL_MIN = 8  # below this the thread hand-off costs more than it saves

    def __init__(self, compiled_grammars: xgr.CompiledGrammar | list[xgr.CompiledGrammar]) -> None:
        """One grammar for every row, or one per row (in batch order)."""
        super().__init__(compiled_grammars)
        self._batch_matcher: xgr.BatchGrammarMatcher | None = None
        self._forced_stop: set[int] = set()
        first = self.compiled_grammars[0]
        self._stop_ids = list(first.tokenizer_info.stop_token_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.matchers:
            self.batch_size = input_ids.shape[0]
            grammars = self.compiled_grammars
            if len(grammars) == 1:
                grammars = grammars * self.batch_size
            self.compiled_grammars = grammars
            self.matchers = [xgr.GrammarMatcher(g) for g in grammars]
            self.token_bitmask = xgr.allocate_token_bitmask(self.batch_size, self.full_vocab_size)
            if self.batch_size >= self._BATCH_FILL_MIN:
                self._batch_matcher = xgr.BatchGrammarMatcher()
        if input_ids.shape[0] != self.batch_size:
            raise RuntimeError(
                f"grammar processor built for batch {self.batch_size}, got {input_ids.shape[0]}"
            )

        if self.prefilled:
            last = input_ids[:, -1].tolist()  # the one device->host sync of this step
            for i, matcher in enumerate(self.matchers):
                if i in self._forced_stop or matcher.is_terminated():
                    continue
                if not matcher.accept_token(last[i]):
                    logger.warning(
                        "grammar rejected token %d in row %d; stopping that row", last[i], i
                    )
                    self._forced_stop.add(i)
        else:
            self.prefilled = True

        active = [
            i
            for i, m in enumerate(self.matchers)
            if i not in self._forced_stop and not m.is_terminated()
        ]
        if self._batch_matcher is not None and len(active) >= self._BATCH_FILL_MIN:
            self._batch_matcher.batch_fill_next_token_bitmask(
                [self.matchers[i] for i in active], self.token_bitmask, active
            )
        else:
            for i in active:
                self.matchers[i].fill_next_token_bitmask(self.token_bitmask, i)
        for i in self._forced_stop:
            self._fill_stop_only(i)

        if scores.device.type == "cuda":
            mask = self.token_bitmask.to(scores.device, non_blocking=True)
            _apply_mask_cuda(scores, mask, self.full_vocab_size)
            return scores
        # xgrammar masks float32 logits on CPU or CUDA only; anything else round-trips.
        work = scores
        if scores.device.type != "cpu" or scores.dtype != torch.float32:
            work = scores.to("cpu", torch.float32)
        xgr.apply_token_bitmask_inplace(work, self.token_bitmask, vocab_size=self.full_vocab_size)
        return work if work is scores else work.to(scores.device, scores.dtype)

    def _fill_stop_only(self, row: int) -> None:
        """Allow only the stop tokens in ``row`` of the bitmask."""
        assert self.token_bitmask is not None
        self.token_bitmask[row].zero_()
        for tok in self._stop_ids:
            word, bit = divmod(tok, 32)
            # int32 bitmask: set bit ``bit`` of word ``word`` (bit 31 is the sign bit).
            value = int(self.token_bitmask[row, word]) | (1 << bit)
            if value >= 2**31:
                value -= 2**32
            self.token_bitmask[row, word] = value


# xgrammar's CUDA masking backends, fastest first. Triton ships with CUDA builds of torch but is
# not guaranteed; "torch_native" is plain torch and always works. The first that works is kept.
_CUDA_BACKENDS = ["triton", "cuda", "torch_native"]
_cuda_backend: str | None = None


def _apply_mask_cuda(scores: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> None:
    global _cuda_backend
    if _cuda_backend is not None:
        xgr.apply_token_bitmask_inplace(scores, mask, vocab_size=vocab_size, backend=_cuda_backend)
        return
    last_error: Exception | None = None
    for backend in _CUDA_BACKENDS:
        try:
            xgr.apply_token_bitmask_inplace(scores, mask, vocab_size=vocab_size, backend=backend)
        except Exception as exc:  # missing triton, kernel build failure, ...
            logger.warning("xgrammar %s masking unavailable (%s); trying the next", backend, exc)
            last_error = exc
            continue
        _cuda_backend = backend
        logger.info("grammar masking on CUDA uses xgrammar's %s backend", backend)
        return
    raise RuntimeError(f"no xgrammar CUDA masking backend works: {last_error}")
