"""Preparation threads on the CPU: tokenizer sharing options and the torch thread budget.

1. Tokenizer: one shot's rendered prompt encoded from 1 and from 8 threads with the tokenizer
   shared as is, behind its lock (``SerialTokenizer``, what the engine does) and as one
   ``copy.deepcopy`` per thread; plus what one copy costs (time, resident memory).
   ``--tokenizer DIR`` measures another checkpoint's tokenizer (e.g. a Qwen2-sized one).
2. Thread budget: ``--workers`` preparation threads prepare 5-frame 448x252 shots (the real
   ``ShotPreparer``) beside one busy "generate" thread (float32 matmuls on its own
   ``--generate-threads``), once with ``prepare_torch_threads`` 1 and once with PyTorch's
   default (one per core); shots/s of preparation and matmuls/s of the generate thread.

    python scripts/bench_prepare_threads.py [--tokenizer DIR] [--workers 8] [--seconds 8]
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from qwen_server.engine import checkpoint  # noqa: E402
from qwen_server.engine.inputs import ShotPreparer  # noqa: E402
from qwen_server.engine.prompts import build_messages, render_prompt  # noqa: E402
from qwen_server.engine.thread_budget import apply_torch_threads, cpu_cores  # noqa: E402
from qwen_server.engine.tokenizer_lock import SerialTokenizer  # noqa: E402
from tests.unit.engine_fixtures import load_script, make_shot, tiny_settings  # noqa: E402


def _prompt(tokenizer: Any) -> str:
    messages = build_messages(
        n_frames=5, frames_as="video", duration=2.3, audio_summary="speech, some music",
        caption_max_chars=200,
    )  # fmt: skip
    return render_prompt(tokenizer, messages)


def tokenizer_options(tokenizer: Any, text: str, calls: int) -> None:
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    copies = [copy.deepcopy(tokenizer) for _ in range(3)]
    copy_ms = (time.perf_counter() - t0) / 3 * 1000
    copy_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024 / 3
    del copies
    print(f"tokenizer: {len(tokenizer)} ids; prompt {tokens} tokens")
    print(f"one per-thread copy: {copy_ms:.0f} ms of deepcopy, ~{copy_mb:.0f} MB resident")
    serial = SerialTokenizer(tokenizer)
    local = threading.local()

    def per_thread(_: int) -> Any:
        own = getattr(local, "tokenizer", None)
        if own is None:
            own = local.tokenizer = copy.deepcopy(tokenizer)
        return own(text, add_special_tokens=False)

    options = {
        "shared, unprotected": lambda _: tokenizer(text, add_special_tokens=False),
        "one lock (engine)": lambda _: serial(text, add_special_tokens=False),
        "per-thread copies": per_thread,
    }
    print("| threads | " + " | ".join(options) + " |")
    print("|---:|" + "---:|" * len(options))
    for threads in (1, 8):
        row = []
        for call in options.values():
            local = threading.local()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(call, range(threads * 2)))  # copies made, caches warm
                t0 = time.perf_counter()
                list(pool.map(call, range(calls)))
                row.append((time.perf_counter() - t0) / calls * 1e6)
        print(f"| {threads} | " + " | ".join(f"{us:.0f} us" for us in row) + " |")


def budget_run(preparer: ShotPreparer, workers: int, torch_threads: int, gen_threads: int,
               seconds: float) -> tuple[float, float, float]:  # fmt: skip
    """Prepared shots/s, generate matmuls/s and preparation CPU ms per shot (the process's CPU
    time less the generate thread's: OpenMP workers spinning count, whoever else is busy)."""
    stop = threading.Event()
    matmuls = [0]

    gen_cpu = [0.0]

    def generate() -> None:
        apply_torch_threads(gen_threads)
        a = torch.randn(384, 384)
        start = time.thread_time()
        while not stop.is_set():
            a = torch.tanh(a @ a)
            matmuls[0] += 1
        gen_cpu[0] = time.thread_time() - start

    shots = [make_shot(i, 5, (448, 252)) for i in range(workers)]
    gen = threading.Thread(target=generate)
    with ThreadPoolExecutor(
        workers, initializer=apply_torch_threads, initargs=(torch_threads,)
    ) as pool:
        list(pool.map(preparer.prepare, shots))  # threads started and warm
        cpu0 = time.process_time()
        gen.start()
        done = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            list(pool.map(preparer.prepare, shots))
            done += len(shots)
        elapsed = time.perf_counter() - t0
        stop.set()
        gen.join()
        prep_cpu = time.process_time() - cpu0 - gen_cpu[0]
    return done / elapsed, matmuls[0] / elapsed, prep_cpu / done * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, help="a checkpoint folder with tokenizer files")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--generate-threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = load_script("make_tiny_model").build_tiny_model(Path(tmp) / "tiny")
        settings = tiny_settings(model_dir, model={"max_pixels": 448 * 448})
        tokenizer, image_processor = checkpoint.load_tokenizer_and_image_processor(settings)
        config = checkpoint.load_config(settings)
        if args.tokenizer is not None:
            from transformers import AutoTokenizer

            other = AutoTokenizer.from_pretrained(args.tokenizer)
            tokenizer_options(other, _prompt(tokenizer), args.calls)  # the engine's template
        else:
            tokenizer_options(tokenizer, _prompt(tokenizer), args.calls)
        preparer = ShotPreparer(
            tokenizer,
            image_processor,
            image_token_id=config.image_token_id,
            video_token_id=config.video_token_id,
            frames_as="video",
            caption_max_chars=200,
            max_new_tokens=160,
            pixel_dtype=torch.bfloat16,
        )
        cores = cpu_cores()
        default = torch.get_num_threads()  # PyTorch's own default, before anyone sets one
        gen_threads = args.generate_threads or cores
        print(
            f"\n{args.workers} preparation threads (5 frames 448x252 each) beside a generate "
            f"thread on {gen_threads} torch threads; {cores} cores"
        )
        print(
            "| prepare_torch_threads | prepared shots/s | generate matmuls/s | prep CPU ms/shot |"
        )
        print("|---:|---:|---:|---:|")
        for torch_threads in sorted({1, default}) * 2:  # interleaved, twice: a shared machine
            shots_s, matmuls_s, cpu_ms = budget_run(
                preparer, args.workers, torch_threads, gen_threads, args.seconds
            )
            label = f"{torch_threads}" + (" (PyTorch default)" if torch_threads == default else "")
            print(f"| {label} | {shots_s:.1f} | {matmuls_s:.0f} | {cpu_ms:.0f} |")


if __name__ == "__main__":
    main()
