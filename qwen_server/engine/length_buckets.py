"""Length bucketing: which waiting shots make the next batch, so that it pads little.

A batch is left-padded to its longest prompt: every row costs the longest row's prefill and
KV cache for the whole generation. A FIFO batch of mixed shots (1-frame and 8-frame clips:
~500 vs ~1,300 tokens with Qwen2-VL at 448²) wastes much of both. When more shots wait than
fit one batch, ``choose`` takes shots of about the same length together instead.

Lengths fall into classes ``CLASS_WIDTH`` (12.5 %) wide on a log scale, so rows of one class
pad at most that much. A batch is the oldest waiting shot's class, oldest first; when that
class has too few shots, the nearest classes fill it (nearest first, shorter before longer
at the same distance: a shorter row pads only itself, a longer one pads every other row).

Nobody starves:

* the oldest waiting shot is always in the next batch;
* only the oldest ``LOOKAHEAD_BATCHES`` batches' worth of shots are candidates, so reordering
  stays local to what would run soon anyway;
* a shot is passed over when a younger one goes in a batch before it; once passed over
  ``MAX_SKIPS`` times it is taken in the next batch (oldest first): younger shots overtake
  any shot at most ``MAX_SKIPS`` times.

With fewer waiting shots than fit a batch, all of them go: bucketing never makes a batch
smaller (a full batch matters more for throughput than its padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LOOKAHEAD_BATCHES = 4
MAX_SKIPS = 3
CLASS_WIDTH = 0.125


def length_class(tokens: int) -> int:
    """The class of a prompt length: classes are ``CLASS_WIDTH`` wide on a log scale."""
    return int(math.log(max(1, tokens)) / math.log1p(CLASS_WIDTH))


def padding_tokens(lengths: Sequence[int]) -> int:
    """Pad tokens of one left-padded batch of these prompt lengths."""
    return len(lengths) * max(lengths) - sum(lengths) if lengths else 0


def choose(lengths: Sequence[int], skips: Sequence[int], size: int) -> list[int]:
    """Indices (ascending) of the candidates that make the next batch of at most ``size``.

    ``lengths`` and ``skips`` describe the candidates oldest first (``skips``: how often each
    was passed over already). Forced in: the oldest and every candidate passed over
    ``MAX_SKIPS`` times (oldest first, up to ``size``); the rest by class, as the module doc
    says, the forced shots' longest giving the class.
    """
    n = len(lengths)
    if n <= size:
        return list(range(n))
    forced = [i for i in range(n) if i == 0 or skips[i] >= MAX_SKIPS][:size]
    room = size - len(forced)
    if room == 0:
        return forced
    home = length_class(max(lengths[i] for i in forced))
    taken = set(forced)

    def nearness(i: int) -> tuple[int, int, int]:
        cls = length_class(lengths[i])
        return (abs(cls - home), int(cls > home), i)  # then shorter first, then oldest

    others = sorted((i for i in range(n) if i not in taken), key=nearness)
    return sorted(forced + others[:room])
