"""Caller-chosen vocabularies through the real engine: the tiny checkpoint on the CPU.

One ``generate`` call may mix shots with different attribute sets: each row gets its own
grammar and token budget, and each answer carries exactly its shot's attributes, complete.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from qwen_server.contract.vocabulary import (
    DEFAULT_VOCABULARY,
    AttributeSpec,
    Vocabulary,
    load_vocabulary_file,
)
from qwen_server.engine.grammar import worst_case_new_tokens
from qwen_server.engine.lifecycle import Engine

from .engine_fixtures import CAPTION_MAX, REPO_ROOT, make_shot, tiny_settings

TRAILER = REPO_ROOT / "examples" / "trailer_attributes.yaml"


def _with(shot_id: int, vocabulary: Vocabulary):
    shot = make_shot(shot_id, 2)
    shot.vocabulary = vocabulary
    return shot


def test_a_batch_mixing_vocabularies_gives_each_shot_its_own_set(tiny_model_dir: Path) -> None:
    trailer = load_vocabulary_file(TRAILER)[0]
    humor = Vocabulary((AttributeSpec("humor", "how funny the shot is"),))
    settings = tiny_settings(tiny_model_dir, batching={"max_batch_size": 8, "max_wait_ms": 500})
    engine = Engine(settings)
    engine.load()
    sizes: list[int] = []
    engine.on_batch = lambda size, seconds: sizes.append(size)
    vocabularies = [DEFAULT_VOCABULARY, trailer, humor, trailer, DEFAULT_VOCABULARY]
    shots = [_with(i, v) for i, v in enumerate(vocabularies)]

    async def run() -> list:
        await engine.start()
        try:
            return await engine.analyze(shots)
        finally:
            await engine.stop(timeout=10)

    outputs = asyncio.run(run())
    assert sizes == [5], "one generate call for the whole mixed batch"
    for out, vocab in zip(outputs, vocabularies, strict=True):
        assert list(out.scores) == list(vocab.names)
        assert out.fallback == [], "constrained answers are complete whatever the weights"
        assert all(0.0 <= v <= 1.0 for v in out.scores.values())
        assert out.counts["new_tokens"] < worst_case_new_tokens(CAPTION_MAX, vocab.names)
    stats = engine.stats()
    assert stats["grammars_cached"] == 3 and stats["grammar_compiles"] == 3


def test_token_budget_follows_the_vocabulary(tiny_model_dir: Path) -> None:
    trailer = load_vocabulary_file(TRAILER)[0]
    engine = Engine(tiny_settings(tiny_model_dir, analysis={"attributes_file": str(TRAILER)}))
    engine.load()
    assert engine.max_new_tokens == worst_case_new_tokens(CAPTION_MAX, trailer.names)
    six = engine.prepare(make_shot(1, 1))  # a ShotInput defaults to the six
    big = engine.prepare(_with(2, trailer))
    assert six.max_new_tokens == max(160, worst_case_new_tokens(CAPTION_MAX, six.names))
    assert big.max_new_tokens == worst_case_new_tokens(CAPTION_MAX, trailer.names)
    assert big.grammar is not six.grammar
