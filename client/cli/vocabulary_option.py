"""``--attributes FILE|NAMES``: the vocabulary a run asks the servers for (analyze).

A value is a vocabulary file (the server's format, read and checked at once, before any
decoding) or a comma-separated list of names the server must know; every problem is a
UsageError naming the file and key, or the bad name.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from client.errors import UsageError
from client.options import AttributeRequest
from qwen_server.contract.vocabulary import VocabularyError, load_vocabulary_file

log = logging.getLogger("client.cli")

ATTRIBUTES_HELP = (
    "the attributes to score, in output order: a vocabulary FILE (YAML, 'attributes:' mapping "
    "each name to one line the model reads, e.g. examples/trailer_attributes.yaml; each is sent "
    "with its description and evidence, so the server need not know it) or NAME,NAME,... "
    "(names the server knows: GET /vocabulary). A value ending in .yaml/.yml/.json, holding a "
    "'/' or naming an existing file is a FILE (default: the server's whole vocabulary)"
)


def add_attributes_option(p: argparse.ArgumentParser) -> None:
    """--attributes FILE | NAME,NAME,... (``attributes_from_args``)."""
    p.add_argument("--attributes", metavar="FILE|NAMES", help=ATTRIBUTES_HELP)


def _is_vocabulary_file(value: str) -> bool:
    """Whether an --attributes value names a file rather than a list of names (names are
    lower-case letters, digits and '_': they never hold a '/' or a '.')."""
    return (
        value.lower().endswith((".yaml", ".yml", ".json"))
        or "/" in value
        or "\\" in value
        or Path(value).is_file()
    )


def attributes_from_args(args: argparse.Namespace) -> AttributeRequest | None:
    """The run's requested attributes from --attributes (None: the server's vocabulary).

    A file is read and checked at once (``load_vocabulary_file``), before any decoding; names are
    checked against the name rule. Every problem is a UsageError naming the file and key, or the
    bad name.
    """
    value = getattr(args, "attributes", None)
    if value is None:
        return None
    if _is_vocabulary_file(value):
        try:
            vocabulary, ignored = load_vocabulary_file(Path(value).expanduser())
        except VocabularyError as exc:  # names the file and the key at fault
            raise UsageError(f"--attributes: {exc}") from None
        if ignored:
            log.info("--attributes %s: ignoring the keys %s", value, ", ".join(ignored))
        return AttributeRequest.from_vocabulary(vocabulary, value)
    names = [n.strip() for n in value.split(",")]
    if "" in names:
        raise UsageError(f"--attributes {value!r}: empty name in the list (NAME,NAME,...)")
    try:
        return AttributeRequest.from_names(names)
    except ValueError as exc:  # VocabularyError included: "--attributes: invalid name ..."
        raise UsageError(str(exc)) from None
