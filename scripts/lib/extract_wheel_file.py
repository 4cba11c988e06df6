"""Copy one file out of the single wheel in a folder: ``extract_wheel_file.py DIR MEMBER DEST``.

Used by ``scripts/test.sh`` to take a data file that a PyPI wheel ships (Qwen's ``qwen.tiktoken``
in the dashscope wheel) without installing the package. The file is written next to ``DEST``
and renamed into place, so an interrupted run never leaves a partial file that looks present.
Exit status 1, with the reason on stderr, when there is not exactly one wheel or it lacks
``MEMBER``.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: extract_wheel_file.py DIR MEMBER DEST", file=sys.stderr)
        return 2
    folder, member, dest = Path(argv[0]), argv[1], Path(argv[2])
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        print(f"expected one wheel in {folder}, found {len(wheels)}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            data = wheel.read(member)
        except KeyError:
            print(f"{wheels[0].name} has no {member}", file=sys.stderr)
            return 1
    if not data:
        print(f"{member} in {wheels[0].name} is empty", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
