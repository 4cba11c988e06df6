"""The replica's staging buffer: queued shots unpinned, one reused buffer, one copy per batch.

On the CPU the buffer is plain (``PixelStaging.pinned`` is False) but the path is the GPU's:
the same fill, layout, growth and copy, so these tests cover what runs on a CUDA replica.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.staging import PixelStaging

from .engine_fixtures import make_shot, tiny_settings


def _rows(n: int, width: int, seed: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_groups_come_back_concatenated_in_one_reused_buffer() -> None:
    staging = PixelStaging("cpu")
    assert not staging.pinned  # no CUDA here: a plain buffer, the same code path
    images = [_rows(5, 12, 1), _rows(3, 12, 2)]
    videos = [_rows(7, 12, 3)]
    got_images, got_videos = staging.to_device([images, videos])
    assert torch.equal(got_images, torch.cat(images))
    assert torch.equal(got_videos, torch.cat(videos))
    assert got_images.dtype == torch.bfloat16 and got_images.is_contiguous()
    first_capacity = staging.capacity_bytes
    # A smaller batch reuses the buffer; the earlier results are copies, never overwritten.
    again = staging.to_device([[_rows(2, 12, 4)]])[0]
    assert staging.grown == 1 and staging.capacity_bytes == first_capacity
    assert torch.equal(got_images, torch.cat(images))
    assert torch.equal(again, _rows(2, 12, 4))
    # A bigger batch grows it (geometrically, whole MiB), once.
    big = [_rows(60_000, 12, 5)]
    assert torch.equal(staging.to_device([big])[0], big[0])
    assert staging.grown == 2 and staging.capacity_bytes >= 60_000 * 12 * 2
    assert staging.capacity_bytes % (1 << 20) == 0


def test_float32_rows_and_odd_sizes_keep_alignment() -> None:
    staging = PixelStaging(torch.device("cpu"))
    a, b = _rows(3, 7, 6, torch.float32), _rows(1, 5, 7, torch.float32)
    out_a, out_b = staging.to_device([[a], [b]])  # 84 bytes, then a group at offset 128
    assert torch.equal(out_a, a) and torch.equal(out_b, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_buffer_is_pinned_and_copies_arrive() -> None:
    staging = PixelStaging("cuda")
    rows = _rows(1000, 1176, 8)
    assert staging.pinned
    out = staging.to_device([[rows]])[0]
    assert out.device.type == "cuda"
    again = staging.to_device([[rows * 2]])[0]  # refilling waits for the first copy
    assert torch.equal(out.cpu(), rows) and torch.equal(again.cpu(), rows * 2)


def test_queued_shots_stay_unpinned_and_the_batch_goes_through_staging(
    tiny_model_dir: Path,
) -> None:
    engine = Engine(tiny_settings(tiny_model_dir, model={"frames_as": "images"}))
    engine.load()
    generator = engine.generator(0)
    shots = [engine.prepare(make_shot(i, n)) for i, n in ((1, 1), (2, 3))]
    assert not any(s.pixel_values.is_pinned() for s in shots)
    video_engine = Engine(tiny_settings(tiny_model_dir))
    video_engine.load()
    clip = video_engine.prepare(make_shot(3, 4))
    batch = generator.collate([*shots, clip])  # images and a video: one fill, one copy
    assert torch.equal(batch["pixel_values"], torch.cat([s.pixel_values for s in shots]))
    assert torch.equal(batch["pixel_values_videos"], clip.pixel_values)
    grown = generator.staging.grown
    assert grown >= 1  # the warm-up's batch already went through it
    results = generator.generate(shots)
    assert len(results) == 2 and generator.staging.grown == grown  # a smaller batch reuses it
