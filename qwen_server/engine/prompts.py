"""The prompt: what the model is told about a shot and what it must answer.

The model gets the shot's frames in time order (as separate images or as one short clip, see
``model.frames_as``), the shot's duration and a plain-language summary of its audio, and is asked
for the answer defined in ``grammar``: a one-sentence caption and one integer score 0..100 per
attribute of the shot's vocabulary, each listed with its one-line description so that different
shots are rated on the same scale.

Messages use the chat format of the Qwen2-VL processor; ``render_prompt`` turns them into text
with the checkpoint's own chat template, so the image/video placeholders are exactly the ones the
model was trained with.
"""

from __future__ import annotations

from typing import Any, Literal

from ..contract.vocabulary import DEFAULT_VOCABULARY, Vocabulary
from .grammar import CAPTION_PREFIX, KEY_VALUE, LINE_BREAK, PAIR_SEPARATOR
from .output_parsing import SCORE_MAX

FramesAs = Literal["images", "video"]

SYSTEM_PROMPT = (
    "You are a film analyst. You watch one shot of a film, describe what is on screen in one "
    "plain sentence, and rate how the shot feels. You answer in the exact format asked for."
)

_MAX_AUDIO_CHARS = 300


def _one_line(text: str, limit: int) -> str:
    """Collapse whitespace (no newlines can break the prompt's layout) and bound the length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def instructions(
    *,
    n_frames: int,
    duration: float | None,
    audio_summary: str | None,
    caption_max_chars: int,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> str:
    """The text that follows the frames: facts about the shot, then what to answer."""
    if duration is not None and duration >= 0:
        duration_text = f"Shot duration: {duration:.1f} seconds ({n_frames} frames shown)."
    else:
        duration_text = f"Shot duration: unknown ({n_frames} frames shown)."
    if audio_summary and audio_summary.strip():
        audio_text = f"Audio: {_one_line(audio_summary, _MAX_AUDIO_CHARS)}."
    else:
        audio_text = "Audio: no audio information."
    definitions = "\n".join(f"- {a.name}: {a.description}" for a in vocabulary.attributes)
    example = PAIR_SEPARATOR.join(f"{name}{KEY_VALUE}N" for name in vocabulary.names)
    return (
        f"{duration_text}\n{audio_text}\n\n"
        f"Write a caption: one plain sentence of at most {caption_max_chars} characters saying "
        "who or what is on screen, where, and what happens. Then rate the shot on each "
        f"attribute below with an integer N from 0 (not at all) to {SCORE_MAX} (extremely), "
        f"using what you see and the audio:\n{definitions}\n\n"
        "Answer with exactly these two lines and nothing else:\n"
        f"{CAPTION_PREFIX}<sentence>{LINE_BREAK}{example}"
    )


def build_messages(
    *,
    n_frames: int,
    frames_as: FramesAs,
    duration: float | None,
    audio_summary: str | None,
    caption_max_chars: int,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> list[dict[str, Any]]:
    """Chat messages for one shot; the vision entries are placeholders filled by the engine.

    ``images``: one image entry per frame, each labelled with its position in time;
    ``video``: one video entry for the whole shot (the frames as a short clip, in order).
    """
    if n_frames < 1:
        raise ValueError("a shot needs at least one frame")
    content: list[dict[str, Any]] = []
    if frames_as == "video":
        content.append({"type": "text", "text": f"A film shot as a clip of {n_frames} frames:\n"})
        content.append({"type": "video"})
    else:
        content.append({"type": "text", "text": "Frames of a film shot, in time order:"})
        for i in range(n_frames):
            content.append({"type": "text", "text": f"\nFrame {i + 1}: "})
            content.append({"type": "image"})
    content.append(
        {
            "type": "text",
            "text": "\n"
            + instructions(
                n_frames=n_frames,
                duration=duration,
                audio_summary=audio_summary,
                caption_max_chars=caption_max_chars,
                vocabulary=vocabulary,
            ),
        }
    )
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": content},
    ]


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """Apply the checkpoint's chat template, ending with the assistant turn's opening."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # some tokenizer versions return a list for a single chat
        text = text[0]
    return text
