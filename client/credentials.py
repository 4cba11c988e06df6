"""The bearer token for the analysis servers, shared by every ``qwen-client`` command."""

from __future__ import annotations

import os
from pathlib import Path

from client.errors import UsageError

TOKEN_ENV = "QWEN_SERVER_TOKEN"


def read_token(token_file: Path | None) -> str | None:
    """The bearer token: the first non-comment line of ``token_file`` (``--token-file``), else
    ``$QWEN_SERVER_TOKEN``.

    Never taken from the command line, where other users could read it in the process list.
    None when neither is set (a server in insecure development mode needs none; any other
    answers 401, reported as an authentication failure). An unreadable token file, or one
    holding no token, is a ``UsageError``; the token itself is never put in a message.
    """
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot read the token file {token_file}: {exc.strerror or exc}"
            ) from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                return line
        raise UsageError(f"the token file {token_file} holds no token")
    return os.environ.get(TOKEN_ENV, "").strip() or None
