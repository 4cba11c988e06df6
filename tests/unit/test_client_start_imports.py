"""What ``qwen-client shots`` loads before it decodes: no HTTP client, and the audio feature
code (scipy, onnxruntime) only in the background thread of ``client.media.feature_loading``."""

from __future__ import annotations

import subprocess
import sys
import threading

from client.media import feature_loading
from tests.cli_runner import REPO


def test_the_shots_path_imports_neither_httpx_nor_scipy() -> None:
    code = (
        "import sys\n"
        "import client.cli.main, client.pipeline.run\n"
        "print(sorted(m for m in ('httpx', 'scipy', 'onnxruntime', 'client.media.features')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_background_loading_gives_the_module_and_leaves_no_thread() -> None:
    feature_loading.stop()  # harmless without a start
    feature_loading.start()
    feature_loading.start()  # a second start while the first runs is ignored
    module = feature_loading.features()
    assert module.__name__ == "client.media.features"
    assert callable(module.shot_audio_features)
    feature_loading.stop()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n == "audio-import" or "warm-up" in n], names
