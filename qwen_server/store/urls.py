"""``store.url``: which URLs name PostgreSQL, where a password hides in one, how to show one.

A libpq URL can carry its password in two places: ``postgresql://user:PASSWORD@host/db`` and
``?password=PASSWORD``. Both are found here so that the config file can refuse them (passwords
come from the environment) and so that every log line and error shows the URL masked. No
database driver is imported: the settings check runs on client-only installs too.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
MASK = "***"


def is_postgres_url(url: str) -> bool:
    """True when ``url`` is a libpq URL (``postgresql://`` or ``postgres://``)."""
    return urlsplit(url).scheme.lower() in POSTGRES_SCHEMES


def url_password(url: str) -> str | None:
    """The password ``url`` carries (user info first, then a ``password`` parameter), or None."""
    parts = urlsplit(url)
    if parts.password:
        return parts.password
    return next((v for k, v in parse_qsl(parts.query) if k == "password" and v), None)


def has_password(url: str) -> bool:
    """True when ``url`` carries a password (in its user info or as a ``password`` parameter)."""
    return url_password(url) is not None


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; everything else (user, hosts, port,
    database, options) is kept so an operator can tell which database is meant."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            masked = [(k, MASK if k == "password" else v) for k, v in pairs]
            query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
