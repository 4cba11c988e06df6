"""Attribute vocabularies: which scores a shot gets, what each means, what it is fused with.

A vocabulary is an ordered list of attributes, each with a name (``ATTRIBUTE_NAME_RULE``), a
one-line description the model reads in its prompt, and an optional *evidence channel*: the
measured signal the model's score is blended with (``EVIDENCE_CHANNELS``; the formulas are in
``qwen_server.analysis.fusion``). An attribute without evidence is scored by the model alone.

The server's vocabulary comes from ``analysis.attributes_file`` (else ``DEFAULT_VOCABULARY``, the
six v1 attributes with their v1 fusion); a request may ask for a subset or define attributes of
its own. The file format is the one the trailer pipeline already uses::

    attributes:
      suspense: "what the model should look for, in one line"
      humor:
        description: "what is funny in the shot"
        evidence: null            # optional; a channel name, or null for model-only

Written as a plain string, an attribute whose name is an evidence channel fuses with that
channel (``darkness`` with measured darkness, as in v1); any other plain-string attribute is
model-only. Other top-level keys (prompt templates, genre profiles, ...) are ignored.

Standard library only, apart from PyYAML for reading files (``load_vocabulary_file``): the client
imports this module to read the same files on machines without the server's dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .constants import ATTRIBUTES

ATTRIBUTE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
ATTRIBUTE_NAME_RE = re.compile(ATTRIBUTE_NAME_PATTERN)
ATTRIBUTE_NAME_RULE = "1-40 characters: lower-case letters, digits or '_', starting with a letter"
MAX_ATTRIBUTES = 64
MAX_DESCRIPTION_CHARS = 300

# The measured evidence an attribute can be fused with: name -> what it measures. Visual
# channels come from the decoded frames, audio channels from the client's audio features; the
# first six are exactly the v1 fusion of the attribute of the same name.
EVIDENCE_CHANNELS: dict[str, str] = {
    "darkness": "visual: measured darkness of the frames (low luma)",
    "motion": "visual: measured inter-frame difference",
    "intensity": "visual motion and contrast; audio loudness, noisiness and beats in music",
    "suspense": "visual darkness and stillness; audio quiet-but-present sound",
    "ambiguity": "visual darkness and low contrast (hard to read what is shown)",
    "emotional_tension": "audio: loudness, and music/loud action over speech over ambience",
    "brightness": "visual: measured mean luma of the frames",
    "colorfulness": "visual: measured mean saturation of the frames",
    "stillness": "visual: 1 - measured motion",
    "loudness": "audio: integrated loudness (LUFS) when sent, else RMS energy, on a dB scale",
}


class VocabularyError(ValueError):
    """A vocabulary that cannot be used; ``where`` names the attribute or key at fault."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its name, what the model is told it means, its evidence channel."""

    name: str
    description: str
    evidence: str | None = None


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, duplicate-free list of attributes (what every result of it carries)."""

    attributes: tuple[AttributeSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Attribute names in output order: also the key of the compiled output grammar."""
        return tuple(a.name for a in self.attributes)

    def get(self, name: str) -> AttributeSpec | None:
        """The attribute called ``name``, or None."""
        for spec in self.attributes:
            if spec.name == name:
                return spec
        return None

    def __len__(self) -> int:
        return len(self.attributes)

    def describe(self) -> list[dict[str, Any]]:
        """JSON form: ``[{"name", "description", "evidence"}, ...]``."""
        return [
            {"name": a.name, "description": a.description, "evidence": a.evidence}
            for a in self.attributes
        ]


def check_name(name: object, where: str) -> str:
    """``name`` if it is a valid attribute name, else VocabularyError naming ``where``."""
    if not isinstance(name, str) or not ATTRIBUTE_NAME_RE.fullmatch(name):
        raise VocabularyError(where, f"invalid attribute name {name!r} ({ATTRIBUTE_NAME_RULE})")
    return name


def check_description(text: object, where: str) -> str:
    """The description as one line (whitespace collapsed), bounded and non-empty."""
    if not isinstance(text, str):
        raise VocabularyError(where, f"description must be a string, got {type(text).__name__}")
    line = " ".join(text.split())
    if not line:
        raise VocabularyError(where, "description is empty")
    if len(line) > MAX_DESCRIPTION_CHARS:
        raise VocabularyError(
            where, f"description is {len(line)} characters (at most {MAX_DESCRIPTION_CHARS})"
        )
    return line


def check_evidence(value: object, where: str) -> str | None:
    """A valid evidence channel name, or None (model-only)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in EVIDENCE_CHANNELS:
        raise VocabularyError(
            where,
            f"unknown evidence {value!r}; one of {', '.join(EVIDENCE_CHANNELS)} or null",
        )
    return value


def default_evidence(name: str) -> str | None:
    """The evidence of an attribute written without one: its own name when that is a channel."""
    return name if name in EVIDENCE_CHANNELS else None


def make_vocabulary(specs: Iterable[AttributeSpec], where: str = "attributes") -> Vocabulary:
    """A Vocabulary from specs, refusing duplicates, an empty list or more than the maximum."""
    items = tuple(specs)
    if not items:
        raise VocabularyError(where, "no attributes")
    if len(items) > MAX_ATTRIBUTES:
        raise VocabularyError(where, f"{len(items)} attributes (at most {MAX_ATTRIBUTES})")
    seen: set[str] = set()
    for spec in items:
        if spec.name in seen:
            raise VocabularyError(f"{where}.{spec.name}", "attribute listed twice")
        seen.add(spec.name)
    return Vocabulary(items)


def parse_attribute(name: object, value: object, where: str) -> AttributeSpec:
    """One entry of a vocabulary file: ``name: "description"`` or ``name: {description,
    evidence}``."""
    name = check_name(name, where)
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in ("description", "evidence"))
        if unknown:
            raise VocabularyError(where, f"unknown keys {unknown} (allowed: description, evidence)")
        if "description" not in value:
            raise VocabularyError(where, "missing 'description'")
        description = check_description(value["description"], where)
        if "evidence" in value:
            evidence = check_evidence(value["evidence"], where)
        else:
            evidence = default_evidence(name)
        return AttributeSpec(name, description, evidence)
    return AttributeSpec(name, check_description(value, where), default_evidence(name))


def parse_vocabulary(data: object, source: str) -> tuple[Vocabulary, list[str]]:
    """A vocabulary from a parsed file (a mapping with an ``attributes`` mapping).

    Returns it with the other top-level keys found (ignored by design: files written for the
    trailer pipeline also hold prompts and genre profiles). Raises VocabularyError naming
    ``source`` and the key at fault.
    """
    if not isinstance(data, Mapping):
        raise VocabularyError(source, "must be a mapping with an 'attributes' key")
    if "attributes" not in data:
        raise VocabularyError(source, "has no 'attributes' key")
    entries = data["attributes"]
    if not isinstance(entries, Mapping):
        raise VocabularyError(f"{source}: attributes", "must be a mapping of name -> description")
    specs = [
        parse_attribute(name, value, f"{source}: attributes.{name}")
        for name, value in entries.items()
    ]
    ignored = sorted(str(k) for k in data if k != "attributes")
    return make_vocabulary(specs, f"{source}: attributes"), ignored


def load_vocabulary_file(path: str | Path) -> tuple[Vocabulary, list[str]]:
    """Read a vocabulary YAML file (see the module doc); returns it and the ignored keys.

    Raises VocabularyError naming the file (and the attribute) for every problem, including a
    missing file and YAML syntax errors.
    """
    import yaml  # only here: the rest of the module is standard library

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise VocabularyError(source, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise VocabularyError(source, "is not UTF-8 text") from None

    class _UniqueKeyLoader(yaml.SafeLoader):
        """YAML's safe loader, refusing a key written twice in one mapping (PyYAML would keep
        the last one silently: an attribute defined twice is almost always a mistake)."""

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise VocabularyError(
                    f"{source}: line {key_node.start_mark.line + 1}", f"key {key!r} written twice"
                )
            seen.add(key)
        return loader.construct_mapping(node)

    _UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise VocabularyError(source, f"is not valid YAML{at}") from None
    return parse_vocabulary(data, source)


# The v1 attributes: what the model is told about each (kept short, every word is paid for in
# prompt tokens on every shot) and the v1 fusion (each with the channel of its own name).
_DEFAULT_DESCRIPTIONS: dict[str, str] = {
    "suspense": "anticipation that something is about to happen; threat or unresolved danger",
    "darkness": "how dark and gloomy image and mood are (low light, night, shadows, bleak tone)",
    "ambiguity": "how unclear it is what is happening or what it means (obscured, odd, mysterious)",
    "emotional_tension": "emotional strain in or between characters (conflict, fear, grief)",
    "intensity": "overall energy and force (violence, action, loud or extreme moments)",
    "motion": "how much moves on screen, camera or subjects (0 = still, 100 = very fast)",
}
DEFAULT_VOCABULARY = Vocabulary(
    tuple(AttributeSpec(n, _DEFAULT_DESCRIPTIONS[n], n) for n in ATTRIBUTES)
)


def resolve_requested(
    requested: Iterable[str | Mapping[str, Any]], known: Vocabulary, where: str = "attributes"
) -> Vocabulary:
    """The vocabulary a request asks for, in its order.

    Each item is the name of an attribute of ``known`` (the server's vocabulary), or a
    definition ``{"name", "description", "evidence"?}``: a new attribute, or a known one with the
    caller's description. A definition without ``evidence`` keeps the known attribute's evidence,
    else ``default_evidence``. Raises VocabularyError naming the item (``attributes[3]``).
    """
    specs: list[AttributeSpec] = []
    for i, item in enumerate(requested):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            spec = known.get(check_name(item, at))
            if spec is None:
                raise VocabularyError(
                    at,
                    f"'{item}' is not in this server's vocabulary ({len(known)} attributes, "
                    'GET /vocabulary lists them); define it as {"name": ..., "description": '
                    "...} to score it anyway",
                )
            specs.append(spec)
            continue
        if not isinstance(item, Mapping):
            raise VocabularyError(at, "must be a name or {name, description}")
        name = check_name(item.get("name"), at)
        base = known.get(name)
        description = item.get("description")
        if description is None:
            if base is None:
                raise VocabularyError(
                    at, f"'{name}' is not in this server's vocabulary: give a description"
                )
            description = base.description
        evidence_given = "evidence" in item
        evidence = (
            check_evidence(item["evidence"], at)
            if evidence_given
            else (base.evidence if base is not None else default_evidence(name))
        )
        specs.append(AttributeSpec(name, check_description(description, at), evidence))
    return make_vocabulary(specs, where)
