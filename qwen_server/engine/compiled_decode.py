"""``model.compile``: decode with a static KV cache and a ``torch.compile``'d forward.

transformers' ``generate`` does the work: with ``cache_implementation="static"`` it allocates a
``StaticCache`` (fixed-size key/value tensors, updated in place) and builds the 4-D attention mask
outside the model, and with a ``compile_config`` it runs every decode step (not the prefill,
whose shapes change with every prompt) through ``torch.compile`` of the model's forward. Qwen2-VL
is ``_can_compile_fullgraph`` in transformers 5.x; the vision tower runs once, in the prefill,
uncompiled.

Keeping recompilation bounded (decisions):

* **Cache length**: each call's ``max_cache_len`` is rounded up to a ladder of a few sizes
  (256, 384, 512, 768, 1024, 1536, ... : at most 1.5x the tokens needed, two sizes per
  doubling); transformers also never shrinks the cache below the longest one it has allocated,
  so in steady state every batch uses the same length.
* **Batch size**: not padded (a padded row costs a whole shot's vision and prefill work).
  Dynamo's automatic dynamic shapes handle it instead: the first call compiles for its exact
  shapes, the first call with another batch size (or cache length) recompiles with that
  dimension symbolic, and later sizes reuse that graph. Measured on the tiny model on CPU:
  batches of 4, 3, 4, 2 shots -> two compilations, then none.
* **Mode**: ``reduce-overhead`` (CUDA graphs: one recorded per distinct batch size x cache
  length, replayed afterwards; this is where decode gains most) on CUDA, ``default`` elsewhere.
  On the CPU compilation is forced with transformers' ``_compile_all_devices`` flag (it would
  otherwise compile only on accelerators), so the tests cover this path.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger("qwen_server.engine")

_MIN_CACHE = 256


def cache_length_bucket(tokens: int) -> int:
    """The smallest size on the ladder 256, 384, 512, 768, 1024, 1536, ... holding ``tokens``."""
    size = _MIN_CACHE
    while True:
        if tokens <= size:
            return size
        if tokens <= size * 3 // 2:
            return size * 3 // 2
        size *= 2


def enable_static_decode(config: Any, device: torch.device) -> None:
    """Switch the ``GenerationConfig`` ``config`` to a static cache with compiled decode steps."""
    from transformers import CompileConfig

    on_cuda = device.type == "cuda"
    compile_config = CompileConfig(
        fullgraph=False,  # a graph break (e.g. a new transformers) falls back, never fails
        dynamic=None,  # automatic dynamic shapes: see the module docstring
        mode="reduce-overhead" if on_cuda else "default",
    )
    if not on_cuda:
        compile_config._compile_all_devices = True
    config.cache_implementation = "static"
    config.compile_config = compile_config
    logger.info(
        "model.compile: static KV cache, torch.compile'd decode (mode %s); the first batches "
        "of each new size compile",
        compile_config.mode,
    )
