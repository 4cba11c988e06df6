"""The prompt: frames in order, duration, audio summary, score definitions, chat template."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_server.contract.vocabulary import (
    DEFAULT_VOCABULARY,
    AttributeSpec,
    Vocabulary,
    load_vocabulary_file,
)
from qwen_server.engine.prompts import build_messages, instructions, render_prompt

REPO = Path(__file__).resolve().parents[2]


def _texts(messages: list[dict]) -> str:
    return "".join(part.get("text", "") for message in messages for part in message["content"])


def test_images_mode_lists_every_frame_in_order() -> None:
    messages = build_messages(
        n_frames=3,
        frames_as="images",
        duration=2.345,
        audio_summary="loud music",
        caption_max_chars=120,
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    content = messages[1]["content"]
    kinds = [part["type"] for part in content]
    assert kinds.count("image") == 3 and "video" not in kinds
    labels = [
        part["text"] for part in content if part["type"] == "text" and "Frame " in part["text"]
    ]
    assert labels == ["\nFrame 1: ", "\nFrame 2: ", "\nFrame 3: "]
    text = _texts(messages)
    assert "2.3 seconds" in text and "Audio: loud music." in text and "120 characters" in text
    assert "caption: <sentence>\nsuspense=N darkness=N" in text


def test_video_mode_uses_one_clip() -> None:
    messages = build_messages(
        n_frames=5, frames_as="video", duration=None, audio_summary=None, caption_max_chars=80
    )
    kinds = [part["type"] for part in messages[1]["content"]]
    assert kinds.count("video") == 1 and "image" not in kinds
    text = _texts(messages)
    assert "5 frames" in text and "duration: unknown" in text
    assert "no audio information" in text


def test_every_score_is_defined_and_requested() -> None:
    text = instructions(n_frames=1, duration=1.0, audio_summary=None, caption_max_chars=50)
    for spec in DEFAULT_VOCABULARY.attributes:
        assert f"- {spec.name}: {spec.description}" in text
        assert f"{spec.name}=N" in text


def test_the_prompt_lists_the_requested_vocabulary_in_order() -> None:
    trailer = load_vocabulary_file(REPO / "examples/trailer_attributes.yaml")[0]
    text = instructions(
        n_frames=5, duration=2.0, audio_summary=None, caption_max_chars=50, vocabulary=trailer
    )
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines == [f"- {a.name}: {a.description}" for a in trailer.attributes]
    assert text.endswith(" ".join(f"{n}=N" for n in trailer.names))
    adhoc = Vocabulary((AttributeSpec("humor", "how funny the shot is"),))
    one = instructions(
        n_frames=1, duration=1.0, audio_summary=None, caption_max_chars=50, vocabulary=adhoc
    )
    assert "- humor: how funny the shot is" in one and "suspense" not in one
    assert one.endswith("caption: <sentence>\nhumor=N")


def test_audio_summary_is_one_bounded_line() -> None:
    text = instructions(
        n_frames=1, duration=1.0, audio_summary="loud\n\nbeat " + "x" * 1000, caption_max_chars=50
    )
    audio_line = next(line for line in text.splitlines() if line.startswith("Audio:"))
    assert audio_line.startswith("Audio: loud beat") and len(audio_line) < 320


def test_zero_frames_refused() -> None:
    with pytest.raises(ValueError):
        build_messages(
            n_frames=0, frames_as="images", duration=1.0, audio_summary=None, caption_max_chars=50
        )


def test_chat_template_renders_placeholders(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    images = render_prompt(
        tokenizer,
        build_messages(
            n_frames=4, frames_as="images", duration=1.0, audio_summary=None, caption_max_chars=50
        ),
    )
    assert images.count("<|vision_start|><|image_pad|><|vision_end|>") == 4
    assert images.startswith("<|im_start|>system\nYou are a film analyst")
    assert images.endswith("<|im_start|>assistant\n")
    video = render_prompt(
        tokenizer,
        build_messages(
            n_frames=4, frames_as="video", duration=1.0, audio_summary=None, caption_max_chars=50
        ),
    )
    assert video.count("<|vision_start|><|video_pad|><|vision_end|>") == 1
