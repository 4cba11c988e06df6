"""Model inputs: video packing matches Qwen2-VL's video processor; tokens; the tiny builder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from qwen_server.engine import checkpoint
from qwen_server.engine.inputs import ShotPreparer
from qwen_server.engine.lifecycle import Engine
from qwen_server.engine.output_parsing import parse_model_output

from .engine_fixtures import CAPTION_MAX, load_script, make_shot, tiny_settings


def _preparer(model_dir: Path, frames_as: str) -> ShotPreparer:
    settings = tiny_settings(model_dir, model={"frames_as": frames_as})
    tokenizer, image_processor = checkpoint.load_tokenizer_and_image_processor(settings)
    config = checkpoint.load_config(settings)
    return ShotPreparer(
        tokenizer,
        image_processor,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        frames_as=frames_as,
        caption_max_chars=40,
        max_new_tokens=160,
    )


def _reference_video_patchify(videos: torch.Tensor, patch: int, merge: int, temporal: int):
    """Qwen2VLVideoProcessor.patchify (transformers 5.x), copied: that class needs torchvision."""
    batch_size, num_frames, channel, height, width = videos.shape
    if pad := -num_frames % temporal:
        videos = torch.cat((videos, videos[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
        num_frames += pad
    grid_t, grid_h, grid_w = num_frames // temporal, height // patch, width // patch
    patches = videos.view(
        batch_size, grid_t, temporal, channel,
        grid_h // merge, merge, patch, grid_w // merge, merge, patch,
    )  # fmt: skip
    patches = patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    flat = patches.reshape(batch_size, grid_t * grid_h * grid_w, channel * temporal * patch**2)
    return flat, grid_t, grid_h, grid_w


def test_video_packing_matches_the_video_processor_layout(tiny_model_dir: Path) -> None:
    video = _preparer(tiny_model_dir, "video")
    images = _preparer(tiny_model_dir, "images")
    shot = make_shot(5, 5, (150, 90))  # odd frame count: the last frame is repeated
    packed = video.prepare(shot)
    # The same frames resized + normalised by the image processor, as (1, T, C, H, W).
    per_image = images.prepare(shot)
    gh, gw = int(per_image.grid_thw[0][1]), int(per_image.grid_thw[0][2])
    p, m = video.patch, video.merge
    frames = per_image.pixel_values.reshape(5, gh // m, gw // m, m, m, 3, 2, p, p)[..., 0, :, :]
    frames = frames.permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(1, 5, 3, gh * p, gw * p)
    expected, gt, rh, rw = _reference_video_patchify(frames, p, m, video.temporal)
    assert packed.kind == "video"
    assert packed.grid_thw.tolist() == [[gt, rh, rw]] == [[3, gh, gw]]
    assert torch.equal(packed.pixel_values, expected[0])


def test_placeholders_expand_to_merged_visual_tokens(tiny_model_dir: Path) -> None:
    preparer = _preparer(tiny_model_dir, "images")
    shot = preparer.prepare(make_shot(6, 3, (120, 200)))
    per_image = [int(row.prod()) // 4 for row in shot.grid_thw]
    assert shot.input_ids.count(preparer.image_token_id) == sum(per_image)
    assert preparer.video_token_id not in shot.input_ids

    video = _preparer(tiny_model_dir, "video").prepare(make_shot(6, 3, (120, 200)))
    assert video.input_ids.count(preparer.video_token_id) == int(video.grid_thw.prod()) // 4
    assert len(video.input_ids) < len(shot.input_ids)  # the clip is cheaper than 3 images


def test_tiny_builder_is_deterministic_and_loadable(tmp_path: Path) -> None:
    builder = load_script("make_tiny_model")
    first = builder.build_tiny_model(tmp_path / "a")
    second = builder.build_tiny_model(tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        digest_a = hashlib.sha256((first / name).read_bytes()).hexdigest()
        digest_b = hashlib.sha256((second / name).read_bytes()).hexdigest()
        assert digest_a == digest_b, name
    config = checkpoint.load_config(tiny_settings(first))
    assert checkpoint.model_class_for(config).__name__ == "Qwen2VLForConditionalGeneration"
    assert config.get_text_config().vocab_size > config.video_token_id


def test_qwen2_5_vl_checkpoint_is_served_too(tmp_path: Path) -> None:
    """AutoConfig picks the Qwen2.5-VL class; both frame modes batch like single shots."""
    model_dir = load_script("make_tiny_model").build_tiny_model(tmp_path / "q25", "qwen2.5-vl")
    shots = [make_shot(31, 3), make_shot(32, 1, (96, 96))]
    engine = Engine(tiny_settings(model_dir))  # frames_as=video: uses second_per_grid_ts
    engine.load()
    generator = engine.generator(0)
    assert type(generator.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    prepared = [engine.prepare(s) for s in shots]
    batched = generator.generate(prepared)
    single = [generator.generate([p])[0] for p in prepared]
    assert [r.text for r in batched] == [r.text for r in single]
    # images mode: the same checkpoint, one batch
    engine = Engine(tiny_settings(model_dir, model={"frames_as": "images"}))
    engine.load()
    results = engine.generator(0).generate([engine.prepare(s) for s in shots])
    assert all(parse_model_output(r.text, CAPTION_MAX).complete for r in results)
