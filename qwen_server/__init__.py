"""Qwen2-VL shot analysis server: batched multimodal scoring of film shots over HTTP."""

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qwen-shot-analysis")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

logger = logging.getLogger("qwen_server")
