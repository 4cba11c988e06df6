"""Bearer-key authentication.

Keys are compared in constant time on their SHA-256 digests: hashing both sides first gives
equal-length inputs to ``secrets.compare_digest`` and means odd or non-ASCII header values can
never raise. The set of keys is hashed once at start-up; plaintext keys are not kept.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from ..errors import Unauthorized


def _digest(value: str | bytes) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return hashlib.sha256(value).digest()


class ApiKeyVerifier:
    """Checks ``Authorization`` header values against the configured keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k) for k in keys if k]

    @property
    def enabled(self) -> bool:
        """False only in explicit insecure development mode (no keys configured)."""
        return bool(self._digests)

    def check_header(self, header: bytes | None) -> None:
        """Accept ``Bearer <key>`` with a configured key; raise Unauthorized otherwise."""
        if not self._digests:
            return
        if not header:
            raise Unauthorized("missing Authorization header (expected 'Bearer <key>')")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            raise Unauthorized("Authorization scheme must be Bearer")
        token = token.strip()
        if not token:
            raise Unauthorized("empty bearer token")
        candidate = _digest(token)
        # Compare against every key without early exit so timing does not reveal which matched.
        ok = False
        for d in self._digests:
            ok |= secrets.compare_digest(candidate, d)
        if not ok:
            raise Unauthorized("invalid API key")
