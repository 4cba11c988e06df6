"""Provider logs made safe to keep: ``ProviderLogScrubber`` on the ``openai`` and ``httpx``
loggers (and ``qwen_server.chat``) omits header mappings, sanitises request ids, redacts the
configured key and escapes control characters, in case their DEBUG output is switched on;
httpcore's header traces are held off (its loggers at INFO).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from ..logsafe import escape_log

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def _escape_lines(text: str) -> str:
    """A multi-line text (a traceback) with each line escaped by ``escape_log``."""
    return "\n".join(escape_log(line) for line in text.split("\n"))


class ProviderLogScrubber(logging.Filter):
    """Makes records of the provider client libraries (and of this module) safe to keep.

    Secrets registered with ``add_secret`` (the provider key) are replaced by ``[redacted]``;
    mapping arguments (response headers, request options) become ``[omitted]``; the request id
    that ``openai`` logs at DEBUG is kept only when it looks like an id; control characters are
    escaped.
    """

    # Loggers that get a scrubber: filters apply to the logger a record is made on, not its
    # children, so every ``openai.*`` module logger is covered at install time.
    LOGGERS = ("openai", "httpx", "httpx2", "qwen_server.chat")
    # httpcore's only output is DEBUG traces that print raw response headers: held at INFO.
    QUIETED = ("httpcore", "httpcore2")
    _secrets: set[str] = set()

    @classmethod
    def add_secret(cls, value: str) -> None:
        """Redact ``value`` from every record passing a scrubber (ignored when too short to be
        a key: redacting "a" would mangle every message)."""
        if len(value) >= 8:
            cls._secrets.add(value)

    @classmethod
    def redact(cls, text: str) -> str:
        """``text`` with every registered secret replaced."""
        for secret in cls._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    @classmethod
    def install(cls) -> None:
        """Attach one scrubber to each logger in LOGGERS and to every ``openai.*`` logger, and
        hold the QUIETED loggers at INFO (idempotent)."""
        names = set(cls.LOGGERS) | {
            n for n in logging.root.manager.loggerDict if n.startswith("openai.")
        }
        for name in sorted(names):
            logger = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in logger.filters):
                logger.addFilter(cls())
        for name in cls.QUIETED:
            logger = logging.getLogger(name)
            if logger.level < logging.INFO:  # NOTSET too: it would inherit DEBUG from root
                logger.setLevel(logging.INFO)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            args = ("[omitted]",)
        elif args:
            if record.msg == "request_id: %s":
                args = tuple(safe_request_id(a) for a in args)
            else:
                args = tuple("[omitted]" if isinstance(a, Mapping) else a for a in args)
        try:
            message = str(record.msg) % args if args else str(record.msg)
        except (TypeError, ValueError):
            message = f"{record.msg} {args!r}"
        record.msg = escape_log(self.redact(message))
        record.args = None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = _escape_lines(self.redact(text))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = _escape_lines(self.redact(record.exc_text))
        return True


def safe_request_id(value: object) -> str:
    """A provider request id fit for a log line: ``-`` when absent, ``[unsafe]`` when it does not
    look like an id (it is a response header, and a provider may echo anything, a key included)."""
    if not value:
        return "-"
    text = str(value)
    if not _SAFE_REQUEST_ID.fullmatch(text) or ProviderLogScrubber.redact(text) != text:
        return "[unsafe]"
    return text
