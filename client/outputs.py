"""The output directory: incremental shots.jsonl, run manifest, resume, final CSV and summary.

Crash safety: each finished batch of shots is appended to ``shots.jsonl`` with one ``write`` of
whole lines, flushed and fsynced. A run killed at any moment leaves at worst a torn last line;
on resume, lines that do not parse are dropped (the file is cut back to the last complete line)
and their shots are analysed again. ``run.json`` (the manifest) records the film's fingerprint
and the settings that shape the output; a resume with another film or other settings is refused
unless ``--force`` clears the directory; its other keys (``source``: where the film is now, the
decode report) are not compared, so a moved film still resumes. When every shot is in,
``shots.jsonl`` is rewritten sorted by shot id and ``shots.csv`` and ``summary.json`` are
written from it (each via a temporary file and an atomic rename), so the final files do not
depend on the order batches happened to finish in, or on how many times the run was
interrupted.

Attributes are whatever the run asked for (``analyze --attributes``) or the server's vocabulary:
``attribute_columns`` decides the names shots.csv and summary.json carry (the requested names,
else those of the first shot, then any other name a record holds, so no score is ever lost).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from client.errors import OutputConflict
from client.run_summary import _warn_if_mixed, attribute_columns, summarize
from client.shots_csv import shots_csv

log = logging.getLogger("client.outputs")

MANIFEST = "run.json"
SHOTS = "shots.jsonl"
CSV = "shots.csv"
SUMMARY = "summary.json"
FRAMES_DIR = "frames"
MANIFEST_FORMAT = 1


def film_fingerprint(path: Path) -> dict[str, Any]:
    """Identify a film by size and a hash of its first and last MiB (fast on any length)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return {"size": size, "sha256_head_tail": h.hexdigest()}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _dumps(record: dict[str, Any]) -> str:
    # allow_nan=False: a NaN must fail loudly here rather than produce invalid JSON.
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ, with old and new value. A missing key equals None (a
    setting recorded since, whose None is what runs before it did); lists (the requested
    attributes) are described by what changed in them, not printed whole."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff(a, b, f"{prefix}{key}.")
        elif a != b and (isinstance(a, list) or isinstance(b, list)):
            keys.append(f"{prefix}{key} ({_list_change(a, b)})")
        elif a != b:
            keys.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return keys


def _item_name(item: object) -> str:
    """The name of a requested attribute: a name, or a definition's ``name``."""
    return str(item.get("name")) if isinstance(item, dict) else str(item)


def _list_change(old: object, new: object) -> str:
    """What changed between two lists of attributes (None: the server's vocabulary)."""

    def label(value: object) -> str:
        if not isinstance(value, list):
            return "the server's vocabulary" if value is None else repr(value)
        return f"{len(value)} attributes"

    if not (isinstance(old, list) and isinstance(new, list)):
        return f"{label(old)} -> {label(new)}"
    before = {_item_name(i): i for i in old}
    after = {_item_name(i): i for i in new}
    parts = []
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    changed = [n for n in after if n in before and before[n] != after[n]]
    for word, names in (("added", added), ("removed", removed), ("redefined", changed)):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{word} {shown}")
    if not parts:
        parts.append("same names in another order")
    return f"{label(old)} -> {label(new)}: " + "; ".join(parts)


class OutputDir:
    """One run's output directory (see module doc). Thread-safe appends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._done: set[int] = set()

    @property
    def shots_path(self) -> Path:
        """The incremental JSON-lines file of shots."""
        return self.path / SHOTS

    @property
    def frames_path(self) -> Path:
        """Where ``shots`` and ``analyze`` write the sampled JPEGs."""
        return self.path / FRAMES_DIR

    @property
    def done(self) -> frozenset[int]:
        """Shot ids already written."""
        with self._lock:
            return frozenset(self._done)

    def manifest(self) -> dict[str, Any] | None:
        """The stored manifest, or None if there is none."""
        p = self.path / MANIFEST
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def prepare(self, manifest: dict[str, Any], force: bool) -> set[int]:
        """Create or resume the run; returns the ids of shots already done.

        Raises OutputConflict when the directory holds another run (other film, command or
        settings) or unknown results, unless ``force`` (which deletes the old results).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputConflict(f"cannot use {self.path} as the output directory: {exc}") from None
        old = self.manifest()
        has_results = self.shots_path.exists() and self.shots_path.stat().st_size > 0
        if force:
            self.clear()
        elif old is not None:
            keys = ("format", "command", "film", "settings")
            old_id = {k: old.get(k) for k in keys}
            new_id = {k: manifest.get(k) for k in keys}
            differences = _diff(old_id, new_id)
            if differences:
                changes = "; ".join(differences[:4])
                raise OutputConflict(
                    f"{self.path} holds a run with a different film or settings ({changes}); "
                    "use the same options to resume, another --out, or --force to start over"
                )
        elif has_results:
            raise OutputConflict(
                f"{self.path} already holds {SHOTS} without a run manifest; "
                "use another --out or --force to start over"
            )
        record = dict(manifest, complete=False)
        _atomic_write(self.path / MANIFEST, json.dumps(record, indent=2, sort_keys=True) + "\n")
        self._done = {r["shot_id"] for r in self._load_and_repair()}
        return set(self._done)

    def clear(self) -> None:
        """Remove this tool's files from the directory (never anything else)."""
        # report.html and timeline.otio: what ``analyze`` exports at the end (client.export).
        for name in (
            MANIFEST,
            SHOTS,
            CSV,
            SUMMARY,
            SHOTS + ".tmp",
            CSV + ".tmp",
            SUMMARY + ".tmp",
            "report.html",
            "timeline.otio",
        ):
            (self.path / name).unlink(missing_ok=True)
        if self.frames_path.is_dir():
            shutil.rmtree(self.frames_path)

    def _load_and_repair(self) -> list[dict[str, Any]]:
        """Read the complete lines of shots.jsonl, cutting off a torn or invalid tail."""
        if not self.shots_path.exists():
            return []
        data = self.shots_path.read_bytes()
        records: list[dict[str, Any]] = []
        seen: set[int] = set()
        good = io.BytesIO()
        dropped = 0
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                sid = int(rec["shot_id"])
            except (ValueError, KeyError, TypeError):
                dropped += 1  # a line cut mid-write (only the last one can be)
                continue
            if sid in seen:
                continue
            seen.add(sid)
            records.append(rec)
            good.write(raw + b"\n")
        if dropped or good.getvalue() != data:
            log.info("resume: dropped %d incomplete line(s) from %s", dropped, SHOTS)
            tmp = self.shots_path.with_name(SHOTS + ".tmp")
            tmp.write_bytes(good.getvalue())
            os.replace(tmp, self.shots_path)
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append shot records as complete lines in one write, then flush and fsync."""
        lines = [_dumps(r) for r in records]
        if not lines:
            return
        blob = "\n".join(lines) + "\n"
        with self._lock, self.shots_path.open("a", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
            self._done.update(int(r["shot_id"]) for r in records)

    def records(self) -> list[dict[str, Any]]:
        """All complete shot records, sorted by shot id."""
        return sorted(self._load_and_repair(), key=lambda r: int(r["shot_id"]))

    def finalize(
        self,
        summary: dict[str, Any],
        analysed: bool,
        diagnostics: dict[str, Any] | None = None,
        attributes: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rewrite shots.jsonl sorted, write shots.csv and summary.json, mark the run complete.

        ``diagnostics`` (the damage met while decoding: ``video_decode``, ``audio_error``) are
        stored in run.json; None keeps what an earlier pass stored there. ``attributes``: the
        requested names (see ``attribute_columns``).
        """
        records = self.records()
        if analysed:
            _warn_if_mixed(records)
        _atomic_write(self.shots_path, "".join(_dumps(r) + "\n" for r in records))
        _atomic_write(self.path / CSV, shots_csv(records, analysed, attributes))
        _atomic_write(self.path / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        manifest = self.manifest() or {}
        if diagnostics is not None:
            manifest.update(diagnostics)
        manifest["complete"] = True
        _atomic_write(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return records


__all__ = ["OutputDir", "attribute_columns", "film_fingerprint", "shots_csv", "summarize"]
