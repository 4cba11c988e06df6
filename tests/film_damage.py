"""Damage a generated film in place, like a bad download or a broken stream (re-exported by
``tests.film_factory``)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def corrupt_stream_packets(
    path: str | Path, kind: str, after_seconds: float, seed: int = 0, every: int = 1
) -> int:
    """Overwrite, in place, the payload of every ``every``-th packet of the first ``kind``
    (``"audio"`` or ``"video"``) stream from ``after_seconds`` on with seeded random bytes.

    The container's own structure (headers, index) stays intact, so the file still opens and
    the other streams decode; only the chosen stream's data is damaged. Returns the number of
    packets damaged. The same arguments always give the same damaged file.
    """
    path = Path(path)
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        spots = []
        for packet in container.demux(stream):
            if packet.pts is None or packet.pos is None or packet.pos < 0 or not packet.size:
                continue
            if float(packet.pts * packet.time_base) >= after_seconds:
                spots.append((packet.pos, packet.size))
    spots = spots[::every]
    rng = np.random.default_rng(seed)
    data = bytearray(path.read_bytes())
    for pos, size in spots:
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return len(spots)


def corrupt_bytes(path: str | Path, fraction: float, seed: int = 0) -> int:
    """Replace ``fraction`` of the bytes between 10 % and 95 % of the file with seeded random
    values (in place), like a damaged download; returns how many bytes were hit."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    n = len(data)
    positions = rng.integers(int(n * 0.1), int(n * 0.95), max(1, int(n * fraction)))
    values = rng.integers(0, 256, len(positions), dtype=np.uint8)
    for pos, value in zip(positions.tolist(), values.tolist(), strict=True):
        data[pos] = value
    path.write_bytes(bytes(data))
    return len(positions)
