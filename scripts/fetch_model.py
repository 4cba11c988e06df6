#!/usr/bin/env python3
"""Download the configured model into the Hugging Face cache, or verify what is cached.

    python scripts/fetch_model.py [--model ID] [--revision REV] [--verify]

Downloads resume where they stopped (the hub client keeps partial files). ``--verify`` checks,
without downloading, that config, tokenizer, processor and every weight shard named in the
index are in the cache and that each safetensors header is readable. Exit codes: 0 ok,
3 hub unreachable / model missing, 4 files incomplete or corrupt.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

ALLOW = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]

OFFLINE_HELP = """\
The model cannot be downloaded from the Hugging Face hub on this machine ({why}).
Options:
  * copy a checkpoint directory here (config.json, tokenizer files, preprocessor_config.json,
    *.safetensors) and point the server at it: set `model.path: /path/to/checkpoint` in
    config.yaml, or QWEN_MODEL__PATH=/path/to/checkpoint, or `qwen-server --model /path/to/dir`;
  * or copy a Hugging Face cache (~/.cache/huggingface/hub) from a machine that has the model;
  * to see the whole pipeline without real weights, use the tiny random-weight test model:
    bash scripts/analyze_film.sh FILM --tiny-model   (captions are then random text)."""


def _configured_model() -> tuple[str, str | None]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from qwen_server.config import load_settings

    settings = load_settings()
    # A configured local checkpoint needs no download: report it as the model to check.
    return settings.model.source, settings.model.revision


def _check_safetensors(path: Path) -> None:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        json.loads(fh.read(n))  # header must parse
    if path.stat().st_size <= 8 + n:
        raise ValueError("no tensor data")


def verify(model: str, revision: str | None) -> int:
    """Check the cached snapshot is complete; print what is missing."""
    from huggingface_hub import snapshot_download

    try:
        root = Path(
            snapshot_download(model, revision=revision, allow_patterns=ALLOW, local_files_only=True)
        )
    except Exception:
        print(f"verify: {model} is not in the Hugging Face cache", file=sys.stderr)
        return 3
    missing = [n for n in ("config.json", "preprocessor_config.json") if not (root / n).is_file()]
    if not (root / "tokenizer.json").is_file() and not (root / "vocab.json").is_file():
        missing.append("tokenizer.json")
    index = root / "model.safetensors.index.json"
    shards = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.is_file()
        else ["model.safetensors"]
    )
    bad = []
    for shard in shards:
        p = root / shard
        if not p.is_file():
            missing.append(shard)
            continue
        try:
            _check_safetensors(p)
        except Exception as exc:
            bad.append(f"{shard} ({exc})")
    if missing or bad:
        print(
            f"verify: {model} is incomplete: missing {missing}, unreadable {bad}", file=sys.stderr
        )
        print("        run scripts/setup.sh again to resume the download", file=sys.stderr)
        return 4
    print(f"verify: {model} OK ({len(shards)} weight file(s))")
    return 0


def download(model: str, revision: str | None) -> int:
    """Fetch (or resume) the snapshot into the cache."""
    from huggingface_hub import snapshot_download

    print(f"==> downloading {model} into the Hugging Face cache (resumable)")
    try:
        path = snapshot_download(model, revision=revision, allow_patterns=ALLOW, etag_timeout=15)
    except Exception as exc:  # offline, DNS failure, gated repo, 404 ...
        why = type(exc).__name__
        print(OFFLINE_HELP.format(why=why), file=sys.stderr)
        return 3
    print(f"==> model ready: {model} ({Path(path).name[:12]})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="hub id (default: model.name from the settings)")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--verify", action="store_true", help="check the cache, download nothing")
    args = p.parse_args()
    name, revision = _configured_model()
    model = args.model or name
    revision = args.revision or revision
    if Path(model).expanduser().is_dir():
        print(f"==> {model} is a local directory; nothing to download")
        return 0
    return verify(model, revision) if args.verify else download(model, revision)


if __name__ == "__main__":
    sys.exit(main())
