"""``model.compile``: static KV cache + torch.compile'd decode, on the tiny checkpoint on the CPU.

The compiled path must give exactly the default path's answers (greedy, fp32), for a batch
mixing shot sizes and attribute vocabularies, and must stop compiling once batch size and cache
length have varied once (automatic dynamic shapes, cache lengths on a short ladder).
"""

from __future__ import annotations

from pathlib import Path

import torch

from qwen_server.contract.vocabulary import DEFAULT_VOCABULARY, AttributeSpec, Vocabulary
from qwen_server.engine.compiled_decode import cache_length_bucket
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.types import ShotInput

from .engine_fixtures import make_shot, tiny_settings

HUMOR = Vocabulary((AttributeSpec("humor", "how funny the shot is"),))


def _shot(shot_id: int, frames: int, size: tuple[int, int], vocabulary: Vocabulary) -> ShotInput:
    shot = make_shot(shot_id, frames, size)
    shot.vocabulary = vocabulary
    return shot


def test_cache_lengths_come_from_a_short_ladder() -> None:
    assert [cache_length_bucket(n) for n in (1, 256, 257, 384, 385, 700, 1025, 3000)] == [
        256,
        256,
        384,
        384,
        512,
        768,
        1536,
        3072,
    ]
    sizes = {cache_length_bucket(n) for n in range(1, 8193)}
    assert len(sizes) == 11  # 256 .. 8192, two sizes per doubling
    assert all(n <= cache_length_bucket(n) <= max(256, n * 3 // 2) for n in range(1, 8193))


def test_compiled_decode_gives_the_default_answers_and_stops_recompiling(
    tiny_model_dir: Path,
) -> None:
    from torch._dynamo.utils import counters

    shots = [
        _shot(1, 2, (160, 96), DEFAULT_VOCABULARY),
        _shot(2, 1, (96, 160), HUMOR),
        _shot(3, 3, (120, 120), DEFAULT_VOCABULARY),
        _shot(4, 1, (64, 64), HUMOR),
        _shot(5, 5, (200, 100), DEFAULT_VOCABULARY),
    ]
    plain = Engine(tiny_settings(tiny_model_dir))
    plain.load()
    expected = [r.text for r in plain.generator(0).generate([plain.prepare(s) for s in shots])]

    compiled = Engine(tiny_settings(tiny_model_dir, model={"compile": True}))
    compiled.load()  # the warm-up (one small shot) compiles the first decode graph
    generator = compiled.generator(0)
    assert generator.generation_config.cache_implementation == "static"
    prepared = [compiled.prepare(s) for s in shots]
    graphs_at_start = counters["stats"]["unique_graphs"]
    # Batch size and cache length both change: one recompilation, with those dimensions dynamic.
    first = generator.generate(prepared[:3])
    assert hasattr(generator.model, "_compiled_call")  # decode really went through torch.compile
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > graphs_at_start  # batch 1 (warm-up) -> 3: recompiled, now dynamic
    # Other batch sizes and prompt lengths: no new graph.
    second = generator.generate(prepared[3:4])
    third = generator.generate([prepared[4], prepared[0], prepared[3], prepared[1]])
    assert counters["stats"]["unique_graphs"] == graphs
    assert [r.text for r in first + second] == expected[:4]
    assert [r.text for r in third] == [expected[4], expected[0], expected[3], expected[1]]


def test_activation_reserve_counts_the_static_cache_length(tiny_model_dir: Path) -> None:
    from qwen_server.config import Settings
    from qwen_server.engine import checkpoint, placement

    config = checkpoint.load_config(tiny_settings(tiny_model_dir))
    plain = placement.activation_reserve_bytes(config, Settings(), torch.bfloat16)
    static = placement.activation_reserve_bytes(
        config, Settings(model={"compile": True}), torch.bfloat16
    )
    assert plain < static < 1.5 * plain
