"""Padding waste of FIFO vs length-bucketed batches, with real prompt lengths (no generation).

Shots of 1, 5 and 8 frames (448x252, a 16:9 frame at model.max_pixels 448²) are prepared by the
engine's real ``ShotPreparer`` with the tiny checkpoint's tokenizer and Qwen2-VL's image
processor settings (patch 14, merge 2, temporal patch 2: the visual token counts of
Qwen2-VL-2B; the text part is tokenized by the tiny BPE, a little longer than Qwen's). A
backlog of them, in random arrival order, is drained through the real ``BatchQueue`` once
oldest-first and once with ``length=`` (bucketing), at each batch size.

Waste = pad tokens / (batch rows x longest prompt), summed over batches: the share of prefill
and KV-cache rows spent on padding. Overtaken = the most times a younger shot went before a
shot (FIFO: 0; bucketing: at most ``length_buckets.MAX_SKIPS``).

    python scripts/bench_bucketing.py [--shots 512] [--mix 1,8] [--batch-sizes 32,64,128]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qwen_server.engine import checkpoint, length_buckets  # noqa: E402
from qwen_server.engine.batching import BatchQueue  # noqa: E402
from qwen_server.engine.inputs import ShotPreparer  # noqa: E402
from tests.unit.engine_fixtures import load_script, make_shot, tiny_settings  # noqa: E402


@dataclass(eq=False)
class _Item:
    order: int
    tokens: int


def prompt_lengths(frame_counts: list[int]) -> dict[int, int]:
    """Prompt tokens of a shot per frame count, prepared by the real preparer."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = load_script("make_tiny_model").build_tiny_model(Path(tmp) / "tiny")
        settings = tiny_settings(model_dir, model={"max_pixels": 448 * 448})
        tokenizer, image_processor = checkpoint.load_tokenizer_and_image_processor(settings)
        config = checkpoint.load_config(settings)
        preparer = ShotPreparer(
            tokenizer,
            image_processor,
            image_token_id=config.image_token_id,
            video_token_id=config.video_token_id,
            frames_as="video",
            caption_max_chars=200,
            max_new_tokens=160,
        )
        return {
            n: len(preparer.prepare(make_shot(n, n, (448, 252))).input_ids) for n in frame_counts
        }


def drain(items: list[_Item], batch: int, bucket: bool) -> list[list[_Item]]:
    async def run() -> list[list[_Item]]:
        queue: BatchQueue[_Item] = BatchQueue(
            max_items=len(items),
            max_batch=batch,
            max_wait_s=0.0,
            length=(lambda i: i.tokens) if bucket else None,
        )
        queue.reserve(len(items))
        queue.put(items)
        queue.close()
        out = []
        while (got := await queue.next_batch()) is not None:
            out.append(got)
        return out

    return asyncio.run(run())


def figures(batches: list[list[_Item]]) -> tuple[float, int]:
    pad = sum(length_buckets.padding_tokens([i.tokens for i in b]) for b in batches)
    slots = sum(len(b) * max(i.tokens for i in b) for b in batches)
    waiting = sorted((i for b in batches for i in b), key=lambda i: i.order)
    overtaken = {i.order: 0 for i in waiting}
    for b in batches:
        chosen = {id(i) for i in b}
        youngest = max(i.order for i in b)
        for i in waiting:
            if id(i) not in chosen and i.order < youngest:
                overtaken[i.order] += 1
        waiting = [i for i in waiting if id(i) not in chosen]
    return pad / slots, max(overtaken.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=512)
    parser.add_argument("--mix", default="1,8", help="frame counts, drawn uniformly")
    parser.add_argument("--batch-sizes", default="32,64,128")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    counts = [int(n) for n in args.mix.split(",")]
    lengths = prompt_lengths(counts)
    print("prompt tokens per frame count:", lengths)
    rng = random.Random(args.seed)
    items = [_Item(k, lengths[rng.choice(counts)]) for k in range(args.shots)]
    print(f"{args.shots} shots queued, frames {args.mix}")
    print("| batch | FIFO waste | bucketed waste | bucketed batches | most overtaken |")
    print("|---:|---:|---:|---:|---:|")
    for size in (int(b) for b in args.batch_sizes.split(",")):
        fifo, _ = figures(drain(items, size, bucket=False))
        bucketed = drain(items, size, bucket=True)
        waste, overtaken = figures(bucketed)
        print(f"| {size} | {fifo:.1%} | {waste:.1%} | {len(bucketed)} | {overtaken} |")


if __name__ == "__main__":
    main()
