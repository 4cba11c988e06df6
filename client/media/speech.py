"""Speech in a shot: silero-vad's ONNX model run by onnxruntime, without torch.

The ``silero_vad`` package is only a carrier of the model file here: importing it would import
torch (its ``__init__`` does), which the client does not install, so the file is located with
``importlib.util.find_spec`` and read from ``<package>/data/silero_vad.onnx``.

The shot's slice is resampled to 16 kHz (libswresample, ``to_vad_rate``) and fed to the model
as silero's ``OnnxWrapper`` does: 512-sample chunks (32 ms), each prefixed with the previous
chunk's last 64 samples (zeros first), the recurrent ``state`` (2, 1, 128) carried from chunk
to chunk, the last chunk zero-padded. silero-vad 6.2 also ships the same network exported as a
sequence model (``silero_vad_16k_sequence.onnx``: many chunks per call, LSTM ``h``/``c`` in
and out); its probabilities are bit-identical to the streaming model's (checked by
``tests/unit/test_client_speech.py``) and it costs about a third (one ``run`` per 16 s
instead of per 32 ms, the rest inside onnxruntime with the GIL released), so it is used when
present, the streaming ``silero_vad.onnx`` otherwise.

The per-chunk probabilities go through a numpy port of silero's
``get_speech_timestamps_from_probs`` with its defaults (threshold 0.5, exit threshold 0.35,
speech at least 250 ms, silences under 100 ms bridged, 30 ms padding, no maximum speech
length), so the segments are what ``silero_vad.get_speech_timestamps`` gives.

One ``InferenceSession`` per process, created on first use under a lock and shared by the
worker threads (``InferenceSession.run`` is thread-safe; each call passes its own state); one
intra-op thread, so the VAD never competes with the decoder for more than one core. When the
model file or onnxruntime is missing, ``SpeechUnavailable`` says why (warned once per process)
and the caller records ``speech_error``: a ratio is never made up.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("client.media.speech")

VAD_RATE = 16000
CHUNK = 512
CONTEXT = 64
THRESHOLD = 0.5
NEG_THRESHOLD = 0.35
MIN_SPEECH_MS = 250
MIN_SILENCE_MS = 100
SPEECH_PAD_MS = 30
MAX_SEGMENTS = 64
SEQUENCE_BLOCK = 512  # chunks per call of the sequence model (16.4 s of audio)
STREAMING_MODEL = "silero_vad.onnx"
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"

_session_lock = threading.Lock()
_session: _Model | None = None
_session_error: str | None = None
_warned = False


class SpeechUnavailable(RuntimeError):
    """Speech cannot be measured in this process (model file or onnxruntime missing)."""


@dataclass(frozen=True)
class Speech:
    """Speech found in one shot window: seconds from the window's start."""

    segments: list[tuple[float, float]]  # sorted, non-overlapping, every segment found
    duration: float  # seconds of audio analysed

    @property
    def ratio(self) -> float:
        """Share of the window covered by speech, 0..1."""
        if self.duration <= 0:
            return 0.0
        total = sum(e - s for s, e in self.segments)
        return min(1.0, max(0.0, total / self.duration))

    def as_fields(self) -> dict[str, Any]:
        """``speech_ratio`` and ``speech_segments`` (at most ``MAX_SEGMENTS``: the closest
        neighbours are merged first; the ratio always counts only the speech itself)."""
        merged = merge_closest(self.segments, MAX_SEGMENTS)
        return {
            "speech_ratio": round(self.ratio, 4),
            "speech_segments": [{"start": round(s, 3), "end": round(e, 3)} for s, e in merged],
        }


def model_dir() -> Path | None:
    """silero-vad's packaged model folder, found without importing the package (torch)."""
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def model_path(prefer_sequence: bool = True) -> Path | None:
    """The model file to run: the sequence export when present (and preferred), else the
    streaming ``silero_vad.onnx``; None when neither exists."""
    folder = model_dir()
    if folder is None:
        return None
    names = [SEQUENCE_MODEL, STREAMING_MODEL] if prefer_sequence else [STREAMING_MODEL]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


@dataclass(frozen=True)
class _Model:
    session: Any
    sequence: bool  # the sequence export (h/c state, many chunks per call)


def load_model(path: Path) -> _Model:
    """An InferenceSession on one silero-vad ONNX file (one intra-op thread)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise SpeechUnavailable(f"onnxruntime is not installed: {exc}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        sess = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # a corrupt or incompatible model file
        raise SpeechUnavailable(
            f"silero-vad model {path.name} could not be loaded: {exc}"
        ) from None
    return _Model(sess, sequence={i.name for i in sess.get_inputs()} == {"input", "h", "c"})


def model() -> _Model:
    """The process's shared model; ``SpeechUnavailable`` (warned once) when it cannot exist."""
    global _session, _session_error, _warned
    with _session_lock:
        if _session is None and _session_error is None:
            try:
                path = model_path()
                if path is None:
                    raise SpeechUnavailable(
                        f"silero-vad's ONNX model (silero_vad/data/{STREAMING_MODEL}) not found"
                    )
                _session = load_model(path)
            except SpeechUnavailable as exc:
                _session_error = str(exc)
        if _session_error is not None:
            if not _warned:
                _warned = True
                log.warning("speech detection disabled: %s", _session_error)
            raise SpeechUnavailable(_session_error)
        assert _session is not None
        return _session


def to_vad_rate(y: np.ndarray, sr: int) -> np.ndarray:
    """The signal resampled to 16 kHz as float32, by FFmpeg's libswresample (through PyAV,
    which decodes the film anyway; its default windowed-sinc filter is anti-aliased, and the
    output is aligned with the input and exactly ``len(y) * 16000 / sr`` samples long).

    scipy's ``resample_poly`` did this before; importing scipy.signal cost 0.6-0.9 s of CPU
    per process, more than resampling a whole film's audio."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    if sr == VAD_RATE or not len(y):
        return y
    import av  # the client's decoder; imported here so this module stays light

    frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
    frame.sample_rate = sr
    resampler = av.AudioResampler(format="flt", layout="mono", rate=VAD_RATE)
    parts = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else y[:0]


def _chunks_with_context(audio16: np.ndarray) -> np.ndarray:
    """(chunks, 64 + 512): each zero-padded 512-sample chunk after the previous one's last
    64 samples (zeros before the first)."""
    n = (len(audio16) + CHUNK - 1) // CHUNK
    padded = np.zeros(n * CHUNK + CONTEXT, np.float32)
    padded[CONTEXT : CONTEXT + len(audio16)] = audio16
    return np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + CHUNK)[::CHUNK]


def speech_probabilities(audio16: np.ndarray, vad: _Model | None = None) -> np.ndarray:
    """silero-vad's speech probability of each 512-sample chunk of 16 kHz audio."""
    vad = vad or model()
    chunks = _chunks_with_context(audio16)
    if vad.sequence:
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        parts = []
        for first in range(0, len(chunks), SEQUENCE_BLOCK):
            block = np.ascontiguousarray(chunks[first : first + SEQUENCE_BLOCK])
            probs, h, c = vad.session.run(
                ["speech_probs", "hn", "cn"], {"input": block, "h": h, "c": c}
            )
            parts.append(np.asarray(probs, np.float32).reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(VAD_RATE, dtype=np.int64)
    out = np.empty(len(chunks), np.float32)
    for i, chunk in enumerate(chunks):
        prob, state = vad.session.run(None, {"input": chunk[None, :], "state": state, "sr": sr})
        out[i] = prob[0, 0]
    return out


def speech_timestamps(probs: np.ndarray, n_samples: int) -> list[tuple[int, int]]:
    """silero's ``get_speech_timestamps_from_probs`` (16 kHz, default settings, no maximum
    speech duration), as [start, end) sample pairs."""
    min_speech = VAD_RATE * MIN_SPEECH_MS / 1000
    pad = VAD_RATE * SPEECH_PAD_MS / 1000
    min_silence = VAD_RATE * MIN_SILENCE_MS / 1000
    triggered = False
    speeches: list[list[int]] = []
    start = 0
    temp_end = 0
    for i, p in enumerate(probs.tolist()):
        cur = CHUNK * i
        if p >= THRESHOLD and temp_end:
            temp_end = 0
        if p >= THRESHOLD and not triggered:
            triggered, start = True, cur
            continue
        if p < NEG_THRESHOLD and triggered:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                speeches.append([start, temp_end])
            triggered, temp_end = False, 0
    if triggered and n_samples - start > min_speech:
        speeches.append([start, n_samples])
    for i, sp in enumerate(speeches):
        if i == 0:
            sp[0] = int(max(0, sp[0] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1][0] - sp[1]
            if gap < 2 * pad:
                sp[1] += int(gap // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - gap // 2))
            else:
                sp[1] = int(min(n_samples, sp[1] + pad))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad))
        else:
            sp[1] = int(min(n_samples, sp[1] + pad))
    return [(s, e) for s, e in speeches]


def merge_closest(segments: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` segments: while there are more, the two separated by the shortest
    gap become one (the earliest pair on ties)."""
    out = list(segments)
    while len(out) > limit:
        gaps = [out[i + 1][0] - out[i][1] for i in range(len(out) - 1)]
        i = int(np.argmin(gaps))
        out[i : i + 2] = [(out[i][0], out[i + 1][1])]
    return out


def detect_speech(y: np.ndarray, sr: int) -> Speech:
    """Speech segments of a mono float signal (one shot window) in seconds from its start.

    Raises ``SpeechUnavailable`` when the model or onnxruntime is missing.
    """
    vad = model()  # fails fast, before resampling, when speech cannot be measured
    duration = len(y) / sr
    audio16 = np.nan_to_num(to_vad_rate(y, sr))
    if not len(audio16):
        return Speech([], duration)
    stamps = speech_timestamps(speech_probabilities(audio16, vad), len(audio16))
    segments = [
        (min(duration, s / VAD_RATE), min(duration, e / VAD_RATE)) for s, e in stamps if e > s
    ]
    return Speech(segments, duration)
