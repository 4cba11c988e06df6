#!/usr/bin/env python
"""The measuring and reporting half of ``scripts/gpu_check.sh``: one subcommand per step.

Each subcommand appends rows (JSON lines) to the results file; ``table`` renders them as the
one markdown table the check prints and writes. Rows: ``check``, ``setting``, ``result`` and
optional ``shots_per_s``, ``new_tokens``, ``peak_gib``, ``seconds``.

* ``env``: python, torch, CUDA, GPU, transformers, xgrammar, flash-attn versions;
* ``bench``: the rows of one ``bench_server.py --json`` file (a sweep or a single run);
* ``pytest``: passed / failed / skipped counts from a JUnit XML file;
* ``xgrammar``: which CUDA masking backend the engine would pick, its first-call (JIT) latency
  and steady cost at a batch, and the CPU cost of filling the batch's masks;
* ``record``: one free-form row (a step that failed, timed out or is not available);
* ``table``: the table, printed and written to a file.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

COLUMNS = [
    ("check", "check"),
    ("setting", "setting"),
    ("result", "result"),
    ("shots_per_s", "shots/s"),
    ("new_tokens", "mean new tokens"),
    ("peak_gib", "peak GPU GiB"),
    ("seconds", "s"),
]


def _append(results: Path, *rows: dict[str, Any]) -> None:
    with results.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")


def _version(module: str, dist: str | None = None) -> str:
    """The installed version of ``dist`` (default: ``module``), or why there is none."""
    from importlib import metadata

    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return metadata.version(dist or module)
    except metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))


def env_rows() -> list[dict[str, Any]]:
    import torch

    gpu = "none (CPU)"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB"
    versions = (
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), transformers {_version('transformers')}, "
        f"xgrammar {_version('xgrammar')}, accelerate {_version('accelerate')}, "
        f"flash-attn {_version('flash_attn', 'flash-attn')}, triton {_version('triton')}"
    )
    return [
        {"check": "machine", "setting": "GPU", "result": gpu},
        {"check": "machine", "setting": "versions", "result": versions},
    ]


def bench_rows(path: Path, label: str, seconds: float | None) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    runs = data.get("runs", [data])
    rows = []
    for run in runs:
        b, s = run["batched"], run["one_at_a_time"]
        setting = f"{label}, batch {run['batch_size']}, {run['attn_implementation']}"
        result = f"{b['shots']} shots in {b['batches']} batches (mean {b['mean_batch']:.1f})"
        rows.append(
            {
                "check": "bench_server",
                "setting": setting,
                "result": result,
                "shots_per_s": round(b["shots_per_s"], 2),
                "new_tokens": round(b["mean_new_tokens"], 1),
                "peak_gib": None if run["peak_gpu_gib"] is None else round(run["peak_gpu_gib"], 1),
                "seconds": round(b["seconds"], 1),
            }
        )
        if s is not None:
            ratio = b["shots_per_s"] / s["shots_per_s"]
            rows.append(
                {
                    "check": "one-at-a-time",
                    "setting": f"{label}, {s['shots']} shots, batch 1",
                    "result": f"batched/one-at-a-time = {ratio:.1f}x (batch {run['batch_size']})",
                    "shots_per_s": round(s["shots_per_s"], 2),
                    "new_tokens": round(s["mean_new_tokens"], 1),
                    "seconds": round(s["seconds"], 1),
                }
            )
    if seconds is not None and rows:
        rows[-1]["setting"] += f" (whole step {seconds:.0f} s)"
    return rows


def pytest_rows(junit: Path, label: str, seconds: float | None) -> list[dict[str, Any]]:
    if not junit.is_file():
        return [{"check": "pytest", "setting": label, "result": "no report (crashed?)"}]
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    names = [
        case.get("name", "?")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    result = f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped"
    if names:
        result += " (failed: " + ", ".join(names[:4]) + ")"
    return [{"check": "pytest", "setting": label, "result": result, "seconds": seconds}]


def _engine_backend_order(on_cuda: bool) -> list[str]:
    """The engine's CUDA masking backends, fastest first (where it keeps them today)."""
    if not on_cuda:
        return ["cpu", "torch_native"]
    for module in ("qwen_server.engine.grammar_masking", "qwen_server.engine.grammar_processor"):
        try:
            order = getattr(importlib.import_module(module), "_CUDA_BACKENDS", None)
        except Exception:
            continue
        if order:
            return list(order)
    return ["triton", "cuda", "torch_native"]


def _answer_grammar(info: Any, compiler: Any) -> tuple[Any, str]:
    """The engine's answer grammar (six attributes) when its builder is importable, else JSON."""
    try:
        from qwen_server.contract.constants import ATTRIBUTES
        from qwen_server.engine.grammar import output_ebnf

        return compiler.compile_grammar(output_ebnf(200, tuple(ATTRIBUTES))), "answer grammar"
    except Exception:
        return compiler.compile_builtin_json_grammar(), "builtin JSON grammar"


def xgrammar_rows(model_dir: Path, batch: int, vocab_size: int) -> list[dict[str, Any]]:
    import torch
    import xgrammar as xgr
    from transformers import AutoTokenizer

    on_cuda = torch.cuda.is_available()
    device = "cuda" if on_cuda else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = max(vocab_size, len(tokenizer))
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    t0 = time.perf_counter()
    compiled, which = _answer_grammar(info, xgr.GrammarCompiler(info))
    compile_ms = (time.perf_counter() - t0) * 1000
    matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch)]
    bitmask = xgr.allocate_token_bitmask(batch, vocab)
    fills = []
    filler = xgr.BatchGrammarMatcher() if hasattr(xgr, "BatchGrammarMatcher") else None
    for _ in range(5):
        t0 = time.perf_counter()
        if filler is not None:
            filler.batch_fill_next_token_bitmask(matchers, bitmask)
        else:
            for i, m in enumerate(matchers):
                m.fill_next_token_bitmask(bitmask, i)
        fills.append((time.perf_counter() - t0) * 1e6)
    rows = [
        {
            "check": "xgrammar",
            "setting": f"{which}, vocab {vocab}",
            "result": f"compiled in {compile_ms:.0f} ms; mask fill at batch {batch}: "
            f"{statistics.median(fills):.0f} µs/step (CPU, median of 5)",
        }
    ]
    picked = None
    for backend in _engine_backend_order(on_cuda):
        logits = torch.randn(batch, vocab, device=device, dtype=torch.float32)
        mask = bitmask.to(device)
        try:
            t0 = time.perf_counter()
            xgr.apply_token_bitmask_inplace(logits, mask, vocab_size=vocab, backend=backend)
            if on_cuda:
                torch.cuda.synchronize()
            first_ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            for _ in range(20):
                xgr.apply_token_bitmask_inplace(logits, mask, vocab_size=vocab, backend=backend)
            if on_cuda:
                torch.cuda.synchronize()
            steady_us = (time.perf_counter() - t0) / 20 * 1e6
        except Exception as exc:
            result = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        else:
            mark = "" if picked else " <- the engine's pick (first that works)"
            picked = picked or backend
            result = f"first call {first_ms:.1f} ms, then {steady_us:.0f} µs/step{mark}"
        rows.append(
            {"check": "xgrammar mask", "setting": f"{backend}, batch {batch}", "result": result}
        )
    if picked is None:
        rows.append({"check": "xgrammar mask", "setting": device, "result": "NO backend works"})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text


def table(results: Path, title: str) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    peaks = [r["peak_gib"] for r in rows if isinstance(r.get("peak_gib"), (int, float))]
    if peaks:
        rows.append(
            {
                "check": "peak GPU memory",
                "setting": "max over the bench runs (torch max_memory_allocated)",
                "result": f"{max(peaks):.1f} GiB",
                "peak_gib": max(peaks),
            }
        )
    lines = [f"## {title}", ""]
    lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
    lines.append("|" + "|".join(" --- " for _ in COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("env", "bench", "pytest", "xgrammar", "record", "table"):
        p = sub.add_parser(name)
        p.add_argument("--results", type=Path, required=True)
        if name in ("bench", "pytest"):
            p.add_argument("--input", type=Path, required=True)
            p.add_argument("--label", required=True)
            p.add_argument("--seconds", type=float)
        if name == "xgrammar":
            p.add_argument("--model", type=Path, required=True)
            p.add_argument("--batch", type=int, default=64)
            p.add_argument("--vocab-size", type=int, default=151936)
        if name == "record":
            p.add_argument("--check", required=True)
            p.add_argument("--setting", default="")
            p.add_argument("--result", required=True)
            p.add_argument("--seconds", type=float)
        if name == "table":
            p.add_argument("--out", type=Path, required=True)
            p.add_argument("--title", default="GPU check")
    args = parser.parse_args(argv)
    if args.command == "env":
        _append(args.results, *env_rows())
    elif args.command == "bench":
        _append(args.results, *bench_rows(args.input, args.label, args.seconds))
    elif args.command == "pytest":
        _append(args.results, *pytest_rows(args.input, args.label, args.seconds))
    elif args.command == "xgrammar":
        _append(args.results, *xgrammar_rows(args.model, args.batch, args.vocab_size))
    elif args.command == "record":
        row = {"check": args.check, "setting": args.setting, "result": args.result}
        _append(args.results, {**row, "seconds": args.seconds})
    else:
        text = table(args.results, args.title)
        args.out.write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
