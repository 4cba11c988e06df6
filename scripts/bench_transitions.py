"""Transition detection: accuracy on a generated film, and its CPU cost in a ``shots`` run.

Accuracy: a film of shots joined by dissolves, fades through black, cuts to and from black and
hard cuts (``tests.film_factory.make_film(joins=...)``, known frames) goes through
``qwen-client shots``; its summary.json ``transitions`` (dissolve, fade_out, fade_in; cuts are
not counted here, the cut tests score them) and ``technical_cues`` (black) are matched one to
one against the truth. A match is a detected and a true interval (inclusive frame ranges) whose
overlap is at least half their union (IoU >= 0.5), greedily by IoU; F1 comes from the matches
whatever their kind, kind accuracy is the share of matches with the true kind.

CPU: ``qwen-client shots`` on a 1080p film (``--film``, default the 60 s film that
``scripts/bench_client.py --make-test-film 60`` writes) with ``--no-transitions`` and with the
default, user + sys CPU seconds of the child process, ``--repeat`` times each, interleaved.

    python scripts/bench_transitions.py                 # both
    python scripts/bench_transitions.py --no-cpu        # accuracy only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.film_factory import TransitionTruth  # noqa: E402
from tests.film_joins import score_transitions  # noqa: E402
from tests.transition_films import joined_film  # noqa: E402


def detected(summary: dict[str, Any]) -> list[TransitionTruth]:
    """The gradual transitions and black cues of a summary.json."""
    out = [
        TransitionTruth(t["kind"], t["start_frame"], t["end_frame"])
        for t in summary["transitions"]
        if t["kind"] != "cut"
    ]
    out += [
        TransitionTruth("black", c["start_frame"], c["end_frame"])
        for c in summary["technical_cues"]
    ]
    return sorted(out, key=lambda t: t.first)


def shots_run(film: Path, out: Path, *extra: str) -> tuple[float, float]:
    """One ``qwen-client shots`` run: (user + sys CPU seconds, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "client.cli",
            "shots",
            str(film),
            "--out",
            str(out),
            "--force",
            "--quiet",
            *extra,
        ],
        cwd=REPO,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--film", type=Path, default=Path("/tmp/bench_1080p_60s.mp4"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        truth = joined_film(work / "joins.mp4", 36)
        shots_run(truth.path, work / "acc")
        summary = json.loads((work / "acc" / "summary.json").read_text())
        gradual = [t for t in truth.transitions if t.kind != "cut"]
        result = score_transitions(gradual, detected(summary))
        print(
            f"accuracy film: {truth.frame_count} frames, {len(gradual)} true transitions and "
            f"black segments, {result['matches']} matched (IoU >= 0.5)"
        )
        print(
            f"  precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
            f"F1 {result['f1']:.3f}  kind accuracy {result['kind_accuracy']:.3f}"
        )
        if args.no_cpu:
            return 0
        if not args.film.is_file():
            print(f"{args.film} not found (scripts/bench_client.py --make-test-film 60)")
            return 1
        cpu: dict[str, list[float]] = {"--no-transitions": [], "default": []}
        for _ in range(args.repeat):
            for label in cpu:
                extra = ("--no-transitions",) if label != "default" else ()
                c, w = shots_run(args.film, work / "cpu", *extra)
                cpu[label].append(c)
                print(f"  {label:17s} cpu {c:7.2f} s  wall {w:6.2f} s")
        base, full = min(cpu["--no-transitions"]), min(cpu["default"])
        print(
            f"{args.film.name}: CPU (best of {args.repeat}) --no-transitions {base:.2f} s, "
            f"default {full:.2f} s: {100 * (full - base) / base:+.1f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
