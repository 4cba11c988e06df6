#!/usr/bin/env python3
"""How much a busy neighbour core slows a video decode on this machine.

``bench_client.py`` compares ``qwen-client shots`` with a bare decode that has the machine to
itself. Whether the client's other work (detection, transitions, audio, JPEGs: about 3 CPU
seconds per film minute) can hide beside the decode depends on whether the cores are really
independent. On a VM whose vCPUs are hyperthreads of one physical core, or that share a small
memory bandwidth, a decode slows down as soon as anything runs on the other core, even work
that never touches the decoder. This script measures exactly that, in one run, side by side:

1. a single-thread PyAV decode of FILM pinned to one core, the machine otherwise idle;
2. the same decode while a pure-Python busy loop runs pinned to another core;
3. the same decode while a memory-bound numpy loop runs pinned to another core;
4. the bare decode the client is compared with (slice threads, all cores), for the CPU seconds
   that slice threading itself costs over one thread.

A slowdown near 0 % in rows 2 and 3 means the cores are independent; tens of percent mean
that every CPU second the client spends beside the decode also lengthens the decode.

    python scripts/bench_contention.py FILM [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# A decode pinned to core 0 (or left on all cores): prints its wall and thread CPU seconds.
DECODE = """
import os, sys, time, av
if sys.argv[3] == "pin":
    os.sched_setaffinity(0, {int(sys.argv[4])})
with av.open(sys.argv[1]) as c:
    s = c.streams.video[0]
    s.thread_type = "SLICE"
    if sys.argv[2] != "0":
        s.thread_count = int(sys.argv[2])
    w, t = time.perf_counter(), time.process_time()
    for p in c.demux(s):
        p.decode()
    print(time.perf_counter() - w, time.process_time() - t)
"""

# The neighbours: pinned to the given core, they say "busy" once past their set-up, then run
# until killed. Each command line starts with NEIGHBOUR_TAG so that a check (the tests) can find
# exactly these processes and no other busy loop on the machine.
NEIGHBOUR_TAG = "# bench_contention neighbour\n"
SPIN = (
    NEIGHBOUR_TAG + "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "print('busy', flush=True)\nwhile True:\n    pass\n"
)
MEMORY = (
    NEIGHBOUR_TAG + "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "import numpy as np\n"
    "a = np.random.default_rng(0).random(8_000_000)\nprint('busy', flush=True)\n"
    "while True:\n    (a * 2.0).sum()\n"
)


def decode(film: Path, threads: int, core: int | None) -> tuple[float, float]:
    """Wall and CPU seconds of one decode of ``film`` in a fresh process."""
    pin = ["pin", str(core)] if core is not None else ["all", "0"]
    out = subprocess.run(
        [sys.executable, "-c", DECODE, str(film), str(threads), *pin],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def beside(neighbour: str | None, film: Path, cores: list[int]) -> tuple[float, float]:
    """A single-thread decode on ``cores[0]`` with ``neighbour`` busy on ``cores[1]``."""
    if neighbour is None:
        return decode(film, 1, cores[0])
    proc = subprocess.Popen(
        [sys.executable, "-c", neighbour, str(cores[1])], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "busy":  # the decode starts once it is busy
            raise RuntimeError(f"the neighbour process ended early (exit {proc.wait()})")
        return decode(film, 1, cores[0])
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("film", type=Path)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the fastest is kept")
    args = parser.parse_args(argv)
    if not args.film.is_file():
        parser.error(f"no such film: {args.film}")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        parser.error("needs at least two cores")
    rows = {
        "1 thread, alone": lambda: beside(None, args.film, cores),
        "1 thread, Python busy loop on another core": lambda: beside(SPIN, args.film, cores),
        "1 thread, numpy memory loop on another core": lambda: beside(MEMORY, args.film, cores),
        "slice threads, all cores, alone": lambda: decode(args.film, 0, None),
    }
    best: dict[str, tuple[float, float]] = {}
    for _ in range(max(1, args.repeat)):  # round robin: a drifting host weighs on all rows
        for name, run in rows.items():
            wall, cpu = run()
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu)
    alone = best["1 thread, alone"][0]
    print(f"{args.film.name}: {len(cores)} cores, fastest of {max(1, args.repeat)} rounds")
    print(f"{'decode':<46} {'wall s':>7} {'cpu s':>6} {'vs alone':>9}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<46} {wall:7.2f} {cpu:6.2f} {100 * (wall / alone - 1):+8.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
