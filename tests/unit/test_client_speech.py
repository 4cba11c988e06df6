"""silero-vad through onnxruntime, without torch: the model is found without importing the
package, the sequence and streaming exports agree bit for bit, the ported post-processing
equals silero's own, and the speech found in real recordings is where the speech is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.media import speech
from client.media.speech import MAX_SEGMENTS, Speech, detect_speech, merge_closest
from tests.audio_media import decode_audio

SR = 22050


@pytest.fixture(scope="module")
def jfk16(shared_media: Path) -> np.ndarray:
    return speech.to_vad_rate(decode_audio(shared_media / "speech_jfk_11s.flac", SR), SR)


def test_the_model_is_found_without_importing_silero_vad_or_torch() -> None:
    code = (
        "import json, sys\n"
        "from client.media import speech\n"
        "path = speech.model_path()\n"
        "speech.model()\n"
        "print(json.dumps([str(path), 'silero_vad' in sys.modules, 'torch' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path, silero_imported, torch_imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert path.endswith(".onnx") and Path(path).parent.name == "data"
    assert not silero_imported and not torch_imported


def test_sequence_and_streaming_models_give_identical_probabilities(jfk16: np.ndarray) -> None:
    sequence = speech.model_path(prefer_sequence=True)
    streaming = speech.model_path(prefer_sequence=False)
    assert streaming is not None and streaming.name == speech.STREAMING_MODEL
    if sequence is None or sequence.name != speech.SEQUENCE_MODEL:
        pytest.skip("this silero-vad has no sequence export")
    a = speech.speech_probabilities(jfk16, speech.load_model(sequence))
    b = speech.speech_probabilities(jfk16, speech.load_model(streaming))
    assert len(a) == len(b) == (len(jfk16) + 511) // 512
    np.testing.assert_array_equal(a, b)


def test_post_processing_equals_silero(jfk16: np.ndarray) -> None:
    pytest.importorskip("torch")  # silero's own utils import torch (the test env has it)
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    probs = speech.speech_probabilities(jfk16)
    rng = np.random.default_rng(5)
    cases = [probs, rng.random(400).astype(np.float32), np.repeat(rng.random(60), 7)]
    for p in cases:
        n = len(p) * 512 - 100
        ref = get_speech_timestamps_from_probs(list(map(float, p)), audio_length_samples=n)
        ours = speech.speech_timestamps(np.asarray(p, np.float32), n)
        assert ours == [(d["start"], d["end"]) for d in ref]


def test_speech_is_found_in_speech_and_not_in_silence_or_tones(shared_media: Path) -> None:
    jfk = detect_speech(decode_audio(shared_media / "speech_jfk_11s.flac", SR), SR)
    assert jfk.ratio > 0.5 and len(jfk.segments) >= 2
    assert all(0 <= s < e <= jfk.duration for s, e in jfk.segments)
    assert all(a[1] <= b[0] for a, b in zip(jfk.segments, jfk.segments[1:], strict=False))
    t = np.arange(SR * 3) / SR
    assert detect_speech(np.zeros(SR * 3, np.float32), SR).ratio == 0.0
    assert detect_speech((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR).ratio < 0.1
    assert detect_speech(np.zeros(0, np.float32), SR).segments == []


def test_other_rates_are_resampled_to_16k(shared_media: Path) -> None:
    y48 = decode_audio(shared_media / "speech_jfk_11s.flac", 48000)
    y22 = decode_audio(shared_media / "speech_jfk_11s.flac", SR)
    assert abs(detect_speech(y48, 48000).ratio - detect_speech(y22, SR).ratio) < 0.05


def test_segments_are_capped_by_merging_the_closest() -> None:
    segs = [(i * 1.0, i * 1.0 + 0.5) for i in range(70)]
    segs[10] = (10.0, 10.9)  # the gap after it (0.1 s) is the smallest: merged first
    merged = merge_closest(segs, MAX_SEGMENTS)
    assert len(merged) == MAX_SEGMENTS and (10.0, 11.5) in merged
    fields = Speech(segs, 70.0).as_fields()
    assert len(fields["speech_segments"]) == MAX_SEGMENTS
    # The ratio counts the speech itself, not the gaps merged into segments.
    assert fields["speech_ratio"] == pytest.approx((69 * 0.5 + 0.9) / 70.0, abs=1e-4)
