"""A streaming ``multipart/form-data`` reader for ``POST /jobs`` uploads.

Starlette's form parser spools a file part into a temporary file of its own choosing and learns
its size only at the end; a film upload must instead go straight to the job's folder, counted
as it arrives, so a size or disk limit stops it mid-stream with the partial file removed. This
reader is fed the body's chunks and reports parts, their bytes and their ends; it never holds
more than one chunk plus a delimiter's length of a file in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InvalidInput

MAX_HEADER_BYTES = 16 * 1024  # the headers of one part
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_PARAM = re.compile(r'\b(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type (InvalidInput without one)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidInput("POST /jobs takes multipart/form-data (field 'file') or JSON {'path'}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidInput("multipart/form-data without a boundary")
    return match.group(1).encode("latin-1")


@dataclass
class PartStart:
    """A part begins: its form field name and, for a file, the file name it was sent with."""

    name: str
    filename: str | None


@dataclass
class PartData:
    """Bytes of the current part's content."""

    data: bytes


@dataclass
class PartEnd:
    """The current part is complete."""


@dataclass
class MultipartReader:
    """Feed the body's chunks to ``feed``; it returns what they completed, in order."""

    boundary: bytes
    _buffer: bytearray = field(default_factory=bytearray)
    _state: str = "preamble"  # preamble | headers | body | done
    done: bool = False

    def feed(self, chunk: bytes) -> list[PartStart | PartData | PartEnd]:
        """Parse ``chunk`` (b"" at the end of the body, which must then be complete)."""
        events: list[PartStart | PartData | PartEnd] = []
        self._buffer += chunk
        delimiter = b"--" + self.boundary
        while True:
            if self._state == "preamble":
                at = self._buffer.find(delimiter)
                if at < 0:
                    if len(self._buffer) > MAX_HEADER_BYTES:
                        raise InvalidInput("multipart body: no boundary where one was expected")
                    break
                del self._buffer[: at + len(delimiter)]
                self._state = "after_delimiter"
            if self._state == "after_delimiter":
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] == b"--":
                    self._state, self.done = "done", True
                    self._buffer.clear()
                    break
                if self._buffer[:2] != b"\r\n":
                    raise InvalidInput("multipart body: malformed boundary line")
                del self._buffer[:2]
                self._state = "headers"
            if self._state == "headers":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEADER_BYTES:
                        raise InvalidInput("multipart body: part headers too long")
                    break
                events.append(_part_start(bytes(self._buffer[:end])))
                del self._buffer[: end + 4]
                self._state = "body"
            if self._state == "body":
                separator = b"\r\n" + delimiter
                at = self._buffer.find(separator)
                if at < 0:
                    # Keep what could be the start of a separator split across chunks.
                    keep = len(separator) - 1
                    if len(self._buffer) > keep:
                        events.append(PartData(bytes(self._buffer[:-keep])))
                        del self._buffer[:-keep]
                    break
                if at:
                    events.append(PartData(bytes(self._buffer[:at])))
                events.append(PartEnd())
                del self._buffer[: at + len(separator)]
                self._state = "after_delimiter"
                continue
            if self._state == "done":
                self._buffer.clear()
                break
        if not chunk and not self.done:
            raise InvalidInput("multipart body ended before its closing boundary")
        return events


def _part_start(raw: bytes) -> PartStart:
    headers = raw.decode("utf-8", "replace")
    name: str | None = None
    filename: str | None = None
    for line in headers.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for param, text in _PARAM.findall(value):
            if param.lower() == "name":
                name = text
            else:
                filename = text
    if name is None:
        raise InvalidInput("multipart body: a part without a form field name")
    return PartStart(name=name, filename=filename)
