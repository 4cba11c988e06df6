"""Tokenizer thread safety: 16 preparation threads and decoding threads share one tokenizer.

The tokenizer is the tiny checkpoint's real fast tokenizer. Its Rust backend is wrapped by a
probe that counts the threads inside ``encode_batch``/``decode`` at once: the first call is held
open until a second thread enters (or 1 s passes), so sharing the backend without the lock is
seen on every run, not by luck.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from qwen_server.engine import checkpoint
from qwen_server.engine.inputs import ShotPreparer
from qwen_server.engine.tokenizer_lock import SerialTokenizer, lock_for

from .engine_fixtures import make_shot, tiny_settings

THREADS = 16


class _BackendProbe:
    """Stands in for a fast tokenizer's Rust backend; records how many threads are inside."""

    _OWN = ("_backend", "_guard", "_active", "most_at_once", "calls", "_overlap", "_held_once")

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._guard = threading.Lock()
        self._active = 0
        self.most_at_once = 0
        self.calls = 0
        self._overlap = threading.Event()
        self._held_once = False

    def _enter(self) -> None:
        with self._guard:
            self._active += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self._active)
            if self._active > 1:
                self._overlap.set()
            hold, self._held_once = not self._held_once, True
        if hold:  # the first call waits for company: another thread inside is an overlap
            self._overlap.wait(timeout=1.0)

    def _leave(self) -> None:
        with self._guard:
            self._active -= 1

    def encode_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return self._backend.encode_batch(*args, **kwargs)
        finally:
            self._leave()

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return self._backend.decode(*args, **kwargs)
        finally:
            self._leave()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._backend, name, value)


def _preparer(model_dir: Path) -> tuple[ShotPreparer, Any]:
    settings = tiny_settings(model_dir)
    tokenizer, image_processor = checkpoint.load_tokenizer_and_image_processor(settings)
    config = checkpoint.load_config(settings)
    preparer = ShotPreparer(
        tokenizer,
        image_processor,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        frames_as="video",
        caption_max_chars=40,
        max_new_tokens=160,
    )
    return preparer, tokenizer


def test_sixteen_preparation_threads_never_share_the_backend(tiny_model_dir: Path) -> None:
    preparer, tokenizer = _preparer(tiny_model_dir)
    shots = [make_shot(i, 1 + i % 4, (64 + 8 * (i % 3), 56)) for i in range(THREADS * 4)]
    expected = [preparer.prepare(s).input_ids for s in shots]  # one thread, before the probe
    probe = _BackendProbe(tokenizer._tokenizer)
    tokenizer._tokenizer = probe
    start = threading.Barrier(THREADS)

    def prepare(shot: Any) -> list[int]:
        if shot.shot_id < THREADS:
            start.wait()  # all sixteen threads begin together
        return preparer.prepare(shot).input_ids

    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(prepare, shots))
    assert got == expected
    assert probe.calls >= len(shots)
    assert probe.most_at_once == 1, f"{probe.most_at_once} threads inside the tokenizer at once"


def test_decoding_shares_the_preparation_lock(tiny_model_dir: Path) -> None:
    """What a replica's generator does (SerialTokenizer.decode) beside preparation threads."""
    preparer, tokenizer = _preparer(tiny_model_dir)
    decoder = SerialTokenizer(tokenizer)  # as BatchGenerator wraps it
    assert lock_for(tokenizer) is lock_for(decoder.raw)
    shot = make_shot(3, 3)
    expected_ids = preparer.prepare(shot).input_ids
    ids = list(range(len(tokenizer)))[:200]
    expected_text = tokenizer.decode(ids, skip_special_tokens=True)
    probe = _BackendProbe(tokenizer._tokenizer)
    tokenizer._tokenizer = probe
    start = threading.Barrier(THREADS)

    def work(i: int) -> bool:
        start.wait()
        if i % 2:
            return decoder.decode(ids, skip_special_tokens=True) == expected_text
        return preparer.prepare(shot).input_ids == expected_ids

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(work, range(THREADS)))
    assert probe.most_at_once == 1


def test_calls_with_different_settings_get_their_own(tiny_model_dir: Path) -> None:
    """Truncating and plain calls from 16 threads: each gets its own setting's tokens (a shared
    unlocked tokenizer applies one thread's truncation to another's call)."""
    tokenizer = SerialTokenizer(AutoTokenizer.from_pretrained(tiny_model_dir))
    text = "a shot of a door at night and a long corridor " * 40
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(full) > 64
    start = threading.Barrier(THREADS)

    def work(i: int) -> bool:
        start.wait()
        for _ in range(25):
            if i % 2:
                ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=64)
                if ids["input_ids"] != full[:64]:
                    return False
            elif tokenizer(text, add_special_tokens=False)["input_ids"] != full:
                return False
        return True

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(work, range(THREADS)))
