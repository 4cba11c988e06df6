"""Escaping of caller-controlled text before it is logged.

What a caller sends (URL path, method, request id, session ids, messages that quote input) can
hold CR/LF, NUL, ESC and other control characters. Logged raw, ``%0d%0a`` in a path forges a
second log line and an ANSI escape rewrites a terminal. ``escape_log`` is the one function every
log call that carries request data goes through: control characters become visible ``\\xNN`` /
``\\uNNNN`` escapes and a backslash becomes ``\\\\``, so the escaped text is unambiguous.
"""

from __future__ import annotations


def _table() -> dict[int, str]:
    table = {cp: f"\\x{cp:02x}" for cp in range(0x20)}
    table[0x7F] = "\\x7f"
    table.update({cp: f"\\x{cp:02x}" for cp in range(0x80, 0xA0)})  # C1 controls (incl. NEL)
    for cp in (0x2028, 0x2029):  # Unicode line and paragraph separators
        table[cp] = f"\\u{cp:04x}"
    table[ord("\\")] = "\\\\"
    return table


_ESCAPES = _table()


def escape_log(value: object) -> str:
    """``value`` as one printable log field: control characters and backslashes escaped."""
    text = value if isinstance(value, str) else str(value)
    return text.translate(_ESCAPES)
