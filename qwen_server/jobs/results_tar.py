"""A job's results folder as an uncompressed tar stream (``GET /jobs/{id}/results``).

Built block by block (header, file bytes, padding) so the archive is never held in memory nor
written to disk: the JPEGs of a long film's frames/ add up to hundreds of MB. Members are
relative to the folder (``shots.jsonl``, ``frames/shot00001_f0000012.jpg``, ...), regular files
and folders only (a symlink in the folder is skipped, never followed out of it).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE
READ_CHUNK = 1024 * 1024


def _members(folder: Path) -> Iterator[tuple[Path, str]]:
    for dirpath, dirs, files in os.walk(folder):
        dirs.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(folder).as_posix()
        if rel_dir != ".":
            yield base, rel_dir
        for name in sorted(files):
            path = base / name
            if path.is_symlink() or not path.is_file():
                continue
            yield path, path.relative_to(folder).as_posix()


def tar_stream(folder: Path) -> Iterator[bytes]:
    """The tar archive of ``folder``'s contents, in chunks."""
    for path, arcname in _members(folder):
        stat = path.stat()
        info = tarfile.TarInfo(arcname)
        info.mtime = int(stat.st_mtime)
        if path.is_dir():
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            continue
        info.mode = 0o644
        with path.open("rb") as handle:
            # The size in the header is what is read now (a file still growing is cut there).
            data_size = stat.st_size
            info.size = data_size
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            left = data_size
            while left > 0:
                chunk = handle.read(min(READ_CHUNK, left))
                if not chunk:  # shrank meanwhile: pad with zeros to the declared size
                    chunk = b"\0" * min(READ_CHUNK, left)
                left -= len(chunk)
                yield chunk
        remainder = data_size % BLOCK
        if remainder:
            yield b"\0" * (BLOCK - remainder)
    yield b"\0" * (2 * BLOCK)
