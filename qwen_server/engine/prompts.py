"""The prompt: what the model is told about a shot and what it must answer.

The model gets the shot's frames in time order (as separate images or as one short clip, see
``model.frames_as``), the shot's duration and a plain-language summary of its audio, and is asked
for the JSON defined in ``structured``: a one-sentence caption and six integer scores 0..100,
each defined below so that different shots are rated on the same scale.

Messages use the chat format of the Qwen2-VL processor; ``render_prompt`` turns them into text
with the checkpoint's own chat template, so the image/video placeholders are exactly the ones the
model was trained with.
"""

from __future__ import annotations

from typing import Any, Literal

from ..contract.constants import ATTRIBUTES
from .output_parsing import SCORE_MAX

FramesAs = Literal["images", "video"]

SYSTEM_PROMPT = (
    "You are a film analyst. You watch one shot of a film, describe what is on screen in one "
    "plain sentence, and rate how the shot feels. You answer with JSON only."
)

# What each score means. Kept short: every word is paid for in prompt tokens on every shot.
SCORE_DEFINITIONS: dict[str, str] = {
    "suspense": "anticipation that something is about to happen; threat or unresolved danger",
    "darkness": "how dark and gloomy image and mood are (low light, night, shadows, bleak tone)",
    "ambiguity": "how unclear it is what is happening or what it means (obscured, odd, mysterious)",
    "emotional_tension": "emotional strain in or between characters (conflict, fear, grief)",
    "intensity": "overall energy and force (violence, action, loud or extreme moments)",
    "motion": "how much moves on screen, camera or subjects (0 = still, 100 = very fast)",
}
assert tuple(SCORE_DEFINITIONS) == ATTRIBUTES, "a definition per score, in schema order"

_MAX_AUDIO_CHARS = 300


def _one_line(text: str, limit: int) -> str:
    """Collapse whitespace (no newlines can break the prompt's layout) and bound the length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def instructions(
    *, n_frames: int, duration: float | None, audio_summary: str | None, caption_max_chars: int
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
    definitions = "\n".join(f"- {name}: {text}" for name, text in SCORE_DEFINITIONS.items())
    example = ", ".join(f'"{name}": <0-{SCORE_MAX}>' for name in ATTRIBUTES)
    return (
        f"{duration_text}\n{audio_text}\n\n"
        f"Write a caption: one plain sentence of at most {caption_max_chars} characters saying "
        "who or what is on screen, where, and what happens. Then rate the shot with integers "
        f"from 0 (not at all) to {SCORE_MAX} (extremely), using what you see and the audio:\n"
        f"{definitions}\n\n"
        f'Answer with only this JSON object: {{"caption": "<sentence>", {example}}}'
    )


def build_messages(
    *,
    n_frames: int,
    frames_as: FramesAs,
    duration: float | None,
    audio_summary: str | None,
    caption_max_chars: int,
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
