"""The benchmark script: CPU smoke run, and its random-weights model path at a tiny size."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_server.engine.lifecycle import Engine

from .engine_fixtures import load_script, make_shot, tiny_settings


@pytest.fixture(scope="module")
def bench() -> Any:
    return load_script("bench_server")


def test_bench_smoke_run_reports_both_rates(
    bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--shots", "4", "--frames", "2", "--size", "112", "--batch-size", "2"]
    argv += ["--new-tokens", "6", "--baseline-shots", "2", "--device", "cpu", "--json", str(out)]
    assert bench.main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("batched: ") and "one-at-a-time: " in summary and "ratio: " in summary
    result = json.loads(out.read_text())
    assert result["batched"]["shots"] == 4 and result["one_at_a_time"]["shots"] == 2
    assert result["batched"]["mean_new_tokens"] == 6  # forced length, grammar off
    assert result["batched"]["shots_per_s"] > 0 and result["one_at_a_time"]["shots_per_s"] > 0


def test_random_weight_architecture_path_on_cpu(bench: Any, tmp_path: Path) -> None:
    """The --random-weights builder (2B vocab, tied embeddings, bf16) at a tiny width."""
    text = dict(bench.QWEN2_VL_2B_TEXT)
    text.update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    )
    vision = dict(bench.QWEN2_VL_2B_VISION)
    vision.update(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=64)
    model_dir = bench.build_random_model(
        tmp_path / "random",
        text=text,
        vision=vision,
        device="cpu",
        dtype=torch.bfloat16,
        tie_word_embeddings=True,
    )
    shots = [make_shot(1, 3), make_shot(2, 1)]
    for grammar in (False, True):
        settings = tiny_settings(model_dir, model={"dtype": "bfloat16"})
        engine = Engine(settings, force_new_tokens=None if grammar else 5, use_grammar=grammar)
        engine.load()

        async def run(engine: Engine = engine) -> list:
            await engine.start()
            try:
                return await engine.analyze(shots)
            finally:
                await engine.stop(timeout=10)

        outputs = asyncio.run(run())
        assert len(outputs) == 2
        if not grammar:
            assert all(o.counts["new_tokens"] == 5 for o in outputs)
        assert all(len(o.scores) == 6 and o.caption for o in outputs)


def test_vocabulary_bench_measures_both_formats(tiny_model_dir: Path) -> None:
    """The --vocabulary figures on a small scale: the served two-line answer is smaller than
    JSON for 6 and 38 attributes, and the mask and compile timers run on real grammars."""
    from transformers import AutoTokenizer

    from qwen_server.contract.vocabulary import DEFAULT_VOCABULARY, load_vocabulary_file
    from qwen_server.engine.grammar import tokenizer_info

    vb = load_script("bench_vocabulary")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trailer = load_vocabulary_file(vb.DEFAULT_FILE)[0]
    for names in (DEFAULT_VOCABULARY.names, trailer.names):
        sizes = vb.answer_sizes(tokenizer, names)
        for counter in ("tokenizer", "qwen2_pretokens"):
            lines, js = sizes[f"lines_{counter}"], sizes[f"json_{counter}"]
            assert 0 < lines["scores"] < js["scores"] and lines["forced"] < js["forced"]
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    info = tokenizer_info(tokenizer, vocab_size=len(tokenizer), stop_token_ids=stop)
    small = vb.synthetic_info(info, size=len(tokenizer) + 500)
    text, _ = vb._line_answer(trailer.names)
    cost = vb.mask_step_cost(small, trailer.names, 80, 4, vb.synthetic_ids(text))
    assert set(cost) == {"fill_caption_ms", "fill_scores_ms", "apply_cpu_ms"}
    assert all(v > 0 for v in cost.values())
    assert vb.compile_ms(info, trailer.names, 80) > 0
