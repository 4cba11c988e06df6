"""Following a server job from the command line (``submit`` and ``jobs follow``): the upload
bar, the job's progress bar with the server's ETA, the end of the job (results downloaded and
unpacked into the output folder, or a clear error), and what Ctrl-C prints.

The progress bar counts the film's frames decoded on the server (``frames_total`` is known once
the server has probed the film); the shots found and analysed and the server's own ETA
(``eta_s``: decoding and analysis together) ride in its postfix. The results are unpacked into
a hidden folder beside ``--out`` first and moved into place only when complete, so an
interrupted download never leaves half a results folder behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from client.api.jobs import JobFailed, JobsClient, move_into


def upload_bar(size: int, *, enabled: bool) -> tqdm:
    """The upload's progress bar in bytes (a context manager; hidden with --quiet)."""
    return tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="upload",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.2 if sys.stderr.isatty() else 5.0,
    )


def clock(seconds: float | None) -> str:
    """``H:MM:SS`` / ``M:SS`` of a duration, '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def status_line(status: dict[str, Any]) -> str:
    """One line for a job's status (the bar's postfix and ``jobs`` listings)."""
    total = status.get("frames_total")
    frames = f"{status.get('frames_decoded', 0)}/{total if total is not None else '?'} frames"
    shots = f"{status.get('shots_analysed', 0)}/{status.get('shots_found', 0)} shots analysed"
    parts = [str(status.get("state")), frames, shots, f"elapsed {clock(status.get('elapsed_s'))}"]
    if status.get("state") not in ("done", "failed", "cancelled"):
        parts.append(f"ETA {clock(status.get('eta_s'))}")
    return ", ".join(parts)


def interrupted_message(job_id: str, url: str, out: Path) -> str:
    """What Ctrl-C while following prints: the job keeps running, and how to go on."""
    return (
        f"qwen-client: stopped following; job {job_id} keeps running on {url}\n"
        f"  follow it and fetch its results: qwen-client jobs follow {job_id} --server {url} "
        f"--out {out}\n"
        f"  cancel it:                       qwen-client jobs cancel {job_id} --server {url}"
    )


def _follow(client: JobsClient, job_id: str, quiet: bool) -> dict[str, Any]:
    """Show the job's events until it ends; its final status."""
    bar: tqdm | None = None
    last: dict[str, Any] = {}
    try:
        for event, status in client.events(job_id):
            last = status
            if quiet:
                continue
            if bar is None:
                bar = tqdm(
                    total=status.get("frames_total"),
                    unit="frame",
                    file=sys.stderr,
                    dynamic_ncols=True,
                    mininterval=0.2 if sys.stderr.isatty() else 5.0,
                    # The status line (with the server's ETA) is the bar's description, shown
                    # after it: tqdm's own ETA would only count frames, not the analysis.
                    bar_format=f"job {job_id}: " + "{percentage:3.0f}%|{bar}| {desc}",
                )
            if status.get("frames_total") and bar.total != status["frames_total"]:
                bar.total = status["frames_total"]
            bar.n = int(status.get("frames_decoded") or 0)
            bar.set_description_str(status_line(status), refresh=False)
            bar.refresh()
            if event == "end":
                break
    finally:
        if bar is not None:
            bar.close()
    return last


def relink_film(out: Path, film: Path) -> None:
    """Point a downloaded results folder at this machine's copy of the film.

    The server wrote run.json ``source.path`` and summary.json ``film.path`` with its own path
    (an upload folder that may be gone by now); exports link the media by that path, so they
    get the local film instead, and the server's path is kept as ``server_path``."""
    local = str(film.resolve())
    # Each file keeps the layout its writer gives it (client.outputs).
    layouts = {"run.json": {"sort_keys": True}, "summary.json": {"ensure_ascii": False}}
    for name, block in (("run.json", "source"), ("summary.json", "film")):
        path = out / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        record = data.get(block)
        if isinstance(record, dict) and record.get("path") != local:
            record["server_path"] = record.get("path")
            record["path"] = local
            text = json.dumps(data, indent=2, **layouts[name])  # type: ignore[arg-type]
            path.write_text(text + "\n", encoding="utf-8")


def follow_and_fetch(
    client: JobsClient,
    job_id: str,
    out: Path,
    *,
    quiet: bool,
    exports: bool,
    film: Path | None = None,
) -> dict[str, Any]:
    """Follow the job to its end, then download and unpack its results into ``out``
    (JobFailed when it failed or was cancelled); with ``film`` (the local copy the job was
    made from) the folder is relinked to it (``relink_film``). The final status."""
    final = _follow(client, job_id, quiet)
    state = final.get("state")
    if state != "done":
        what = "was cancelled" if state == "cancelled" else f"ended {state}"
        if final.get("error"):
            what += f": {final['error']}"
        kept = final.get("shots_analysed") or 0
        raise JobFailed(
            f"job {job_id} {what} ({kept} shots analysed, kept in session "
            f"{final.get('session_id')} on the server; no results downloaded)"
        )
    t0 = time.monotonic()
    staging = out.parent / f".{out.name}.job-{job_id}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        names = client.download_results(job_id, staging)
        if film is not None and film.is_file():
            relink_film(staging, film)
        move_into(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    print(
        f"job {job_id} done: {final.get('shots_analysed')} shots in "
        f"{clock(final.get('elapsed_s'))} on the server; {len(names)} files downloaded in "
        f"{time.monotonic() - t0:.1f} s -> {out} (session {final.get('session_id')})"
    )
    if exports:
        from client.cli.analyze import _write_exports  # the same files, one implementation

        _write_exports(out, quiet=quiet)
    return final
