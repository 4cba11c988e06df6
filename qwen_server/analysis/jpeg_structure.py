"""Does a JPEG hold enough coded data for the size its header declares?

libjpeg treats an image that ends early *with an end-of-image marker* as a warning, not an
error: it fills the missing blocks with grey and Pillow returns the image as if it were whole
(Pillow surfaces no libjpeg warnings). A frame whose header claims 2000x2000 but whose scan holds
16x16 worth of data therefore decodes "successfully" into a grey picture, and its scores would be
passed off as data. ``LOAD_TRUNCATED_IMAGES`` has nothing to do with it: the file is not cut, it
lies.

The check here is a sound lower bound, not a heuristic: in a Huffman-coded JPEG every 8x8 block
of a sequential scan codes at least one DC symbol and at least one AC symbol (an end-of-block
code, or a coefficient at position 63), and every block of a progressive first DC scan codes one
DC symbol (a DC refinement scan one bit). Each symbol is at least as long as the shortest code of
its Huffman table, so a scan whose entropy-coded bytes are fewer than
``blocks x shortest codes / 8`` cannot be complete. A complete image never fails the check; a
lying header fails it by orders of magnitude. What it cannot see: a detailed image cut short
*and* given a forged end marker while the data left still exceeds the bound (the tail then
decodes grey); a file merely cut short, the common case, is an error of the decoder itself.
Arithmetic-coded and lossless JPEGs (rare) are not checked. The walk is linear in the file size
and touches only marker bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_SOF_HUFFMAN = {0xC0: "baseline", 0xC1: "sequential", 0xC2: "progressive"}
# Every SOFn marker: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_ANY = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length


@dataclass
class _Frame:
    kind: str | None
    width: int
    height: int
    # component id -> (horizontal, vertical) sampling factors
    sampling: dict[int, tuple[int, int]] = field(default_factory=dict)


def _be16(data: bytes, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _shortest_codes(segment: bytes, tables: dict[tuple[int, int], int]) -> None:
    """Record the shortest code length of each Huffman table a DHT segment defines."""
    off = 0
    while off + 17 <= len(segment):
        table_class, table_id = segment[off] >> 4, segment[off] & 0x0F
        counts = segment[off + 1 : off + 17]
        shortest = next((i + 1 for i, n in enumerate(counts) if n), None)
        if shortest is not None:
            tables[(table_class, table_id)] = shortest
        off += 17 + sum(counts)


def _entropy_bytes(data: bytes, start: int) -> tuple[int, int]:
    """Coded bytes of the scan starting at ``start`` (stuffing and RSTn excluded), and where
    the next marker begins."""
    pos, stuffed = start, 0
    while True:
        ff = data.find(b"\xff", pos)
        if ff < 0 or ff + 1 >= len(data):
            return len(data) - start - stuffed, len(data)
        nxt = data[ff + 1]
        if nxt == 0x00:  # a stuffed 0xFF data byte
            stuffed += 1
            pos = ff + 2
        elif 0xD0 <= nxt <= 0xD7:  # restart marker inside the scan
            stuffed += 2
            pos = ff + 2
        elif nxt == 0xFF:  # fill byte before a marker
            stuffed += 1
            pos = ff + 1
        else:
            return ff - start - stuffed, ff


def _scan_min_bits(
    frame: _Frame, scan: bytes, tables: dict[tuple[int, int], int]
) -> tuple[int, list[int], bool]:
    """Least coded bits a complete scan needs, the components it covers, and whether it is a
    scan that must cover them for the image to be whole (sequential or first DC scan)."""
    count = scan[0]
    comps = [(scan[1 + 2 * i], scan[2 + 2 * i] >> 4, scan[2 + 2 * i] & 0x0F) for i in range(count)]
    tail = 1 + 2 * count
    ss, ah = scan[tail], scan[tail + 2] >> 4
    hmax = max(h for h, _ in frame.sampling.values())
    vmax = max(v for _, v in frame.sampling.values())
    bits = 0
    for comp_id, dc_table, ac_table in comps:
        h, v = frame.sampling.get(comp_id, (1, 1))
        if count == 1:  # non-interleaved: the component's own blocks
            blocks = math.ceil(math.ceil(frame.width * h / hmax) / 8) * math.ceil(
                math.ceil(frame.height * v / vmax) / 8
            )
        else:  # interleaved: whole MCUs
            blocks = (
                math.ceil(frame.width / (8 * hmax)) * math.ceil(frame.height / (8 * vmax)) * h * v
            )
        if frame.kind == "progressive":
            if ss != 0:
                per_block = 0  # AC scans can cover thousands of blocks with one EOB run
            elif ah == 0:
                per_block = tables.get((0, dc_table), 1)
            else:
                per_block = 1  # DC refinement: one raw bit per block
        else:
            per_block = tables.get((0, dc_table), 1) + tables.get((1, ac_table), 1)
        bits += blocks * per_block
    required = frame.kind != "progressive" or (ss == 0 and ah == 0)
    return bits, [c for c, _, _ in comps], required


def jpeg_shortfall(data: bytes) -> str | None:
    """Why the JPEG ``data`` cannot hold the image its header declares, or None when it can
    (or when this check does not apply: arithmetic coding, lossless, DNL, unparsable layout,
    which Pillow's decoder then judges)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    tables: dict[tuple[int, int], int] = {}
    frame: _Frame | None = None
    covered: set[int] = set()
    pos = 2
    try:
        while pos + 1 < len(data):
            if data[pos] != 0xFF:
                pos += 1  # garbage between segments; libjpeg skips it too
                continue
            marker = data[pos + 1]
            pos += 2
            if marker == 0xFF:
                pos -= 1
                continue
            if marker == 0xD9:  # end of image
                break
            if marker in _STANDALONE:
                continue
            length = _be16(data, pos)
            segment = data[pos + 2 : pos + length]
            pos += length
            if marker == 0xC4:
                _shortest_codes(segment, tables)
            elif marker in _SOF_ANY:
                frame = _Frame(_SOF_HUFFMAN.get(marker), _be16(segment, 3), _be16(segment, 1))
                for i in range(segment[5]):
                    comp = segment[6 + 3 * i : 9 + 3 * i]
                    frame.sampling[comp[0]] = (max(1, comp[1] >> 4), max(1, comp[1] & 0x0F))
            elif marker == 0xDA and frame is not None:
                have, pos = _entropy_bytes(data, pos)
                if frame.kind is None or frame.height == 0 or not frame.sampling:
                    continue
                need, comps, required = _scan_min_bits(frame, segment, tables)
                if have * 8 < need:
                    return (
                        f"image data ends early: {have} coded bytes where a {frame.width}x"
                        f"{frame.height} image needs at least {math.ceil(need / 8)}"
                    )
                if required:
                    covered.update(comps)
    except (IndexError, ValueError):
        return None  # a malformed layout: the decoder reports it
    if frame is None or frame.kind is None or frame.height == 0:
        return None
    missing = set(frame.sampling) - covered
    if missing:
        return f"image data ends early: no scan for {len(missing)} of its colour components"
    return None
