"""Output grammar: the JSON the model must write, as a JSON schema and as xgrammar EBNF.

The model answers one JSON object per shot::

    {"caption": "<one sentence>", "suspense": 78, "darkness": 65, ...}

* The caption is plain printable ASCII without ``"`` or ``\\`` (so no escapes), starts with a
  visible character and is at most ``caption_max_chars`` long.
* Each score is an integer 0..100 (no leading zeros), scaled to [0, 1] by the parser. Integers are
  cheaper to generate than decimals (at most 3 tokens) and cannot run on forever.

Because every allowed character is one ASCII byte, every token the grammar admits adds at least
one character, so the whole answer is at most ``len(longest possible JSON) + 1`` (the stop
token) tokens: ``worst_case_new_tokens`` gives that bound and the engine never generates fewer
tokens than it, so a constrained answer always terminates as valid JSON. The parser
(``output_parsing``) still accepts garbage (unconstrained generation, truncated text) and falls
back to neutral values.

``output_schema`` is that contract as a JSON schema; ``output_ebnf`` is the same language in the
exact layout generated, which is what xgrammar compiles (see there why). The grammar is compiled
once per tokenizer at load (``compile_output_grammar``); each ``generate`` call gets a fresh
``GrammarLogitsProcessor`` (xgrammar's processors are single-use).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor as XgrLogitsProcessor

from ..contract.constants import ATTRIBUTES
from .output_parsing import SCORE_MAX

logger = logging.getLogger("qwen_server.structured")


# Printable ASCII except '"' (0x22) and '\' (0x5C): no escapes, one byte per character.
_CAPTION_FIRST = r"[!#-\[\]-~]"
_CAPTION_CHAR = r"[ -!#-\[\]-~]"

# Separators of the generated JSON: xgrammar's defaults with any_whitespace=False.
_SEPARATORS = (", ", ": ")


def output_schema(caption_max_chars: int) -> dict[str, Any]:
    """The JSON schema of one answer: a bounded caption then the six integer scores."""
    if caption_max_chars < 1:
        raise ValueError("caption_max_chars must be at least 1")
    properties: dict[str, Any] = {
        "caption": {
            "type": "string",
            "pattern": f"^{_CAPTION_FIRST}{_CAPTION_CHAR}{{0,{caption_max_chars - 1}}}$",
        }
    }
    for name in ATTRIBUTES:
        properties[name] = {"type": "integer", "minimum": 0, "maximum": SCORE_MAX}
    return {
        "type": "object",
        "properties": properties,
        "required": ["caption", *ATTRIBUTES],
        "additionalProperties": False,
    }


def worst_case_new_tokens(caption_max_chars: int) -> int:
    """Most tokens a grammar-conforming answer can take: its longest text plus the stop token.

    Every admitted token carries at least one ASCII character, so characters bound tokens.
    """
    longest = {"caption": "x" * caption_max_chars, **{a: SCORE_MAX for a in ATTRIBUTES}}
    return len(json.dumps(longest, separators=_SEPARATORS)) + 1


def output_ebnf(caption_max_chars: int) -> str:
    """The grammar of ``output_schema`` in xgrammar's EBNF, in the exact JSON layout generated.

    Written out rather than compiled from the schema: xgrammar 0.2.8 fails to compile a JSON
    schema ``pattern`` with a bounded repetition above ~128, and the caption needs 200+.
    """
    if caption_max_chars < 1:
        raise ValueError("caption_max_chars must be at least 1")
    comma, colon = _SEPARATORS
    parts = ['"{" ' + json.dumps(json.dumps("caption") + colon + '"') + " caption"]
    first = True
    for name in ATTRIBUTES:
        literal = ('"' if first else "") + comma + json.dumps(name) + colon
        parts.append(json.dumps(literal) + " score")
        first = False
    parts.append('"}"')
    return (
        f"root ::= {' '.join(parts)}\n"
        f"caption ::= {_CAPTION_FIRST} {_CAPTION_CHAR}{{0,{caption_max_chars - 1}}}\n"
        f'score ::= "0" | [1-9] [0-9]? | "{SCORE_MAX}"\n'
    )


def compile_output_grammar(
    tokenizer: Any, *, vocab_size: int, stop_token_ids: list[int], caption_max_chars: int
) -> xgr.CompiledGrammar:
    """Compile the answer grammar for ``tokenizer`` (once, at load).

    ``vocab_size`` is the model's logits width (often larger than the tokenizer: padded rows are
    masked out); ``stop_token_ids`` must be the ids ``generate`` stops on, so the grammar can
    only end where generation ends.
    """
    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
    )
    compiler = xgr.GrammarCompiler(info)
    return compiler.compile_grammar(output_ebnf(caption_max_chars))


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

    def __init__(self, compiled_grammar: xgr.CompiledGrammar) -> None:
        super().__init__(compiled_grammar)
        self._batch_matcher: xgr.BatchGrammarMatcher | None = None
        self._forced_stop: set[int] = set()
        self._stop_ids = list(compiled_grammar.tokenizer_info.stop_token_ids)

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
