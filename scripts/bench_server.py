#!/usr/bin/env python
"""Shots per second of the batched engine vs one-shot-at-a-time generation, same run, same inputs.

* **batched**: the real ``Engine``: shots are submitted as concurrent ``analyze`` requests
  (``--request-size`` shots each), prepared on CPU threads, merged into GPU batches of up to
  ``--batch-size`` by the batching queue, one ``generate`` call per batch.
* **one-at-a-time**: how the original server worked: for each shot in turn, preprocess it and
  run one ``generate`` call for it alone (same model, same settings, same shots - the first
  ``--baseline-shots`` of them, since this mode is slow).

Output length: by default the JSON grammar is OFF and every answer is forced to exactly
``--new-tokens`` tokens (``min_new_tokens = max_new_tokens``), so both modes do identical work
whatever random weights happen to write. ``--grammar`` measures the served configuration
instead (constrained JSON, answers end when the JSON is complete; the mean length is reported).

Models:

* default: the tiny random-weight checkpoint of ``make_tiny_model.py`` in a temp dir (CPU smoke);
* ``--model DIR``: any local Qwen2-VL / Qwen2.5-VL checkpoint;
* ``--arch qwen2-vl-2b --random-weights``: the real Qwen2-VL-2B architecture with random bf16
  weights built on the GPU (no download; the tiny tokenizer is reused), written to a temp dir
  and loaded through the same ``from_pretrained`` path as the real checkpoint. Needs CUDA.

Example (GPU)::

    python scripts/bench_server.py --arch qwen2-vl-2b --random-weights \\
        --frames 5 --size 448 --batch-size 128 --new-tokens 60   # 512 shots by default

For sweeps (``scripts/gpu_check.sh``): ``--batch-sizes 32,64,128`` measures each size in one
process (a fresh engine per size, the one-at-a-time baseline once, after the largest);
``--model-cache DIR`` keeps the generated checkpoint in DIR and reuses it on the next run;
``--attn-implementation`` picks sdpa / eager / flash_attention_2 instead of the engine's choice.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))
if str(REPO_ROOT / "scripts") not in sys.path:  # bench_models beside this file
    sys.path.insert(0, str(REPO_ROOT / "scripts"))

# The checkpoints benchmarked (re-exported: tests and other scripts use them from here).
from bench_models import (  # noqa: E402
    QWEN2_VL_2B_TEXT,
    QWEN2_VL_2B_VISION,
    build_random_2b,
    build_random_model,
    model_dir_for,
)

__all__ = [
    "QWEN2_VL_2B_TEXT",
    "QWEN2_VL_2B_VISION",
    "build_random_2b",
    "build_random_model",
    "main",
    "make_shots",
    "model_dir_for",
]


def make_shots(n: int, frames: int, size: int, seed: int = 0) -> list[Any]:
    """``n`` shots of ``frames`` smooth random RGB frames of ``size``x``size`` pixels."""
    import numpy as np
    from PIL import Image

    from qwen_server.engine.types import ShotInput

    rng = np.random.default_rng(seed)
    shots = []
    for i in range(n):
        base = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        images = []
        for f in range(frames):
            shifted = np.roll(base, f, axis=1)  # a little motion between frames
            images.append(Image.fromarray(shifted).resize((size, size), Image.BILINEAR))
        shots.append(ShotInput(i, images, duration=2.5, audio_summary="quiet ambience"))
    return shots


async def run_batched(engine: Any, shots: list[Any], request_size: int) -> dict[str, Any]:
    """All shots as concurrent requests through the real queue; returns rate and batch stats."""
    sizes: list[int] = []
    engine.on_batch = lambda size, seconds: sizes.append(size)
    requests = [shots[i : i + request_size] for i in range(0, len(shots), request_size)]
    t0 = time.perf_counter()
    results = await asyncio.gather(*(engine.analyze(r) for r in requests))
    elapsed = time.perf_counter() - t0
    outputs = [o for r in results for o in r]
    return {
        "shots": len(outputs),
        "seconds": elapsed,
        "shots_per_s": len(outputs) / elapsed,
        "batches": len(sizes),
        "mean_batch": statistics.mean(sizes) if sizes else 0.0,
        "mean_new_tokens": statistics.mean(o.counts["new_tokens"] for o in outputs),
    }


def run_one_at_a_time(engine: Any, shots: list[Any]) -> dict[str, Any]:
    """The original server's way: preprocess one shot, one generate() for it, next shot."""
    generator = engine.generator(0)
    tokens = []
    t0 = time.perf_counter()
    for shot in shots:
        result = generator.generate([engine.prepare(shot)])[0]
        tokens.append(result.new_tokens)
    elapsed = time.perf_counter() - t0
    return {
        "shots": len(shots),
        "seconds": elapsed,
        "shots_per_s": len(shots) / elapsed,
        "mean_new_tokens": statistics.mean(tokens),
    }


def _settings(args: argparse.Namespace, model_dir: Path, batch_size: int, queue_shots: int) -> Any:
    from qwen_server.config import Settings

    return Settings(
        model={
            "path": str(model_dir),
            "device": args.device,
            "dtype": args.dtype,
            "placement": args.placement,
            "frames_as": args.frames_as,
            "max_pixels": max(args.size * args.size, 56 * 56),
            "min_pixels": 56 * 56,
            "max_new_tokens": max(16, args.new_tokens),
            "attn_implementation": args.attn_implementation,
        },
        batching={"max_batch_size": batch_size, "max_wait_ms": args.max_wait_ms},
        # The queue must hold a whole request (refused at start-up otherwise).
        server={"max_queued_shots": queue_shots, "max_shots_per_request": queue_shots},
    )


def bench_vocabulary(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    """``--vocabulary``: the six vs the file's attributes (scripts/bench_vocabulary.py)."""
    import torch

    from qwen_server.engine.lifecycle import Engine

    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import bench_vocabulary

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    batch_size = args.batch_size or (64 if on_gpu else 8)
    n_shots = args.shots or (4 * batch_size if on_gpu else 16)
    settings = _settings(args, model_dir, batch_size, max(n_shots, batch_size) * 2)
    engine = Engine(settings)  # the served configuration: grammar on
    engine.load()
    shots = make_shots(n_shots, args.frames, args.size)
    result = bench_vocabulary.bench_vocabularies(
        engine, shots, args.vocabulary, settings.model.caption_max_chars
    )
    return {"model": engine.model_id, "device": engine.device, **result}


async def bench(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    # Over 60 lines on purpose: one linear benchmark (load, warm up, each measured phase, the
    # figures side by side); its phases share the loaded engine and read best top to bottom.
    import torch

    from qwen_server.engine.lifecycle import Engine

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    at_start = torch.cuda.memory_allocated() / 2**30 if on_gpu else None  # leaks between runs
    batch_size = args.batch_size or (128 if on_gpu else 8)
    n_shots = args.shots or (4 * batch_size if on_gpu else 16)
    baseline_shots = min(args.baseline_shots, n_shots)
    queue_shots = max(n_shots, batch_size) * 2
    settings = _settings(args, model_dir, batch_size, queue_shots)
    engine = Engine(
        settings,
        force_new_tokens=None if args.grammar else args.new_tokens,
        use_grammar=args.grammar,
    )
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    shots = make_shots(n_shots, args.frames, args.size)
    await engine.start()
    try:
        # Warm-up (untimed): one full batch, so kernels and allocator caches are ready.
        await run_batched(engine, shots[:batch_size], args.request_size)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        batched = await run_batched(engine, shots, args.request_size)
        peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
    finally:
        await engine.stop(timeout=60)
    baseline = None
    if baseline_shots > 0:
        engine.use_replica_device(0)
        run_one_at_a_time(engine, shots[:1])  # warm-up for batch size 1
        baseline = run_one_at_a_time(engine, shots[:baseline_shots])
    return {
        "model": engine.model_id,
        "device": engine.device,
        "placement": engine.placement,
        "replicas": engine.replicas,
        "frames_as": args.frames_as,
        "attn_implementation": engine.generator(0).model.config._attn_implementation,
        "grammar": args.grammar,
        "frames": args.frames,
        "size": args.size,
        "batch_size": batch_size,
        "new_tokens": args.new_tokens,
        "load_s": load_s,
        "peak_gpu_gib": peak,
        "gpu_gib_at_start": at_start,
        "batched": batched,
        "one_at_a_time": baseline,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint dir (default: build the tiny one)")
    parser.add_argument("--arch", choices=["tiny", "qwen2-vl-2b"], default="tiny")
    parser.add_argument(
        "--random-weights", action="store_true", help="with --arch qwen2-vl-2b: random weights"
    )
    parser.add_argument("--shots", type=int, default=0, help="default: 4 batches (16 on CPU)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=448, help="frame width and height (px)")
    parser.add_argument("--batch-size", type=int, default=0, help="default: 128 GPU, 8 CPU")
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(x) for x in text.split(",") if x.strip()],
        default=None,
        help="comma-separated sweep, e.g. 32,64,128 (one engine per size, baseline once)",
    )
    parser.add_argument(
        "--model-cache",
        type=Path,
        help="write the generated checkpoint here and reuse it when it is already there",
    )
    parser.add_argument(
        "--attn-implementation",
        choices=["auto", "sdpa", "eager", "flash_attention_2"],
        default="auto",
        help="model.attn_implementation (auto: flash-attention 2 when installed, else sdpa)",
    )
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--grammar", action="store_true", help="constrained JSON (see above)")
    parser.add_argument("--frames-as", choices=["video", "images"], default="video")
    parser.add_argument("--request-size", type=int, default=8, help="shots per analyze() call")
    parser.add_argument("--baseline-shots", type=int, default=8, help="0 skips the baseline")
    parser.add_argument("--max-wait-ms", type=float, default=50.0)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto"
    )
    parser.add_argument("--placement", choices=["auto", "replicate", "shard"], default="auto")
    parser.add_argument(
        "--vocabulary",
        type=Path,
        nargs="?",
        const=REPO_ROOT / "examples" / "trailer_attributes.yaml",
        help="compare the six attributes with this vocabulary file (default: the trailer 38)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.arch == "qwen2-vl-2b" and not args.random_weights and args.model is None:
        parser.error("--arch qwen2-vl-2b needs --random-weights (or give --model DIR)")
    if args.shots < 0 or args.frames < 1 or args.new_tokens < 1 or args.batch_size < 0:
        parser.error("--shots, --frames, --new-tokens and --batch-size must be positive")
    if args.batch_sizes is not None and (not args.batch_sizes or min(args.batch_sizes) < 1):
        parser.error("--batch-sizes needs positive sizes, e.g. 32,64,128")
    if args.batch_sizes is not None and args.vocabulary is not None:
        parser.error("--batch-sizes does not combine with --vocabulary")
    return args


def _print_vocabulary(args: argparse.Namespace, result: dict[str, Any]) -> int:
    import bench_vocabulary

    print(f"model={result['model']} device={result['device']} (grammar on, served format)")
    for line in bench_vocabulary.report(result):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _release_memory() -> None:
    """Between the sizes of a sweep: drop the finished engine's tensors before the next load."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _print_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    b, s = result["batched"], result["one_at_a_time"]
    mode = "grammar" if args.grammar else f"forced {args.new_tokens} tokens, grammar off"
    print(
        f"model={result['model']} device={result['device']} placement={result['placement']} "
        f"replicas={result['replicas']} frames={args.frames}x{args.size}px "
        f"as={args.frames_as} batch={result['batch_size']} ({mode}) "
        f"attention={result['attn_implementation']} load={result['load_s']:.1f}s"
    )
    print(
        f"batched: {b['shots']} shots in {b['seconds']:.2f}s, {b['batches']} batches "
        f"(mean {b['mean_batch']:.1f}), mean new tokens {b['mean_new_tokens']:.1f}"
        + (f", peak GPU {result['peak_gpu_gib']:.1f} GiB" if result["peak_gpu_gib"] else "")
    )
    if s is not None:
        print(
            f"one-at-a-time: {s['shots']} shots in {s['seconds']:.2f}s, "
            f"mean new tokens {s['mean_new_tokens']:.1f}"
        )
        ratio = b["shots_per_s"] / s["shots_per_s"]
        print(
            f"batched: {b['shots_per_s']:.2f} shots/s | one-at-a-time: {s['shots_per_s']:.2f} "
            f"shots/s | ratio: {ratio:.1f}x"
        )
    else:
        print(f"batched: {b['shots_per_s']:.2f} shots/s | one-at-a-time: skipped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="qwen-bench-") as tmp:
        model_dir = model_dir_for(args, Path(tmp))
        if args.vocabulary is not None:
            return _print_vocabulary(args, bench_vocabulary(args, model_dir))
        sizes = args.batch_sizes or [args.batch_size]
        results = []
        for i, size in enumerate(sizes):
            run_args = copy.copy(args)
            run_args.batch_size = size
            if i < len(sizes) - 1:
                run_args.baseline_shots = 0  # the baseline does not depend on the batch size
            result = asyncio.run(bench(run_args, model_dir))
            _print_result(run_args, result)
            results.append(result)
            _release_memory()
    if args.json is not None:
        payload: Any = results[0] if args.batch_sizes is None else {"runs": results}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
