"""Genre profiles: a name and weights over attributes, read from YAML and checked.

A profile file is the trailer pipeline's format. It may hold several profiles, each either with
its weights under ``scoring_weights`` (other keys such as ``description`` are allowed) or as a
plain mapping of attribute to weight; the pipeline's vocabulary file, where the profiles sit
under a top-level ``genre_profiles`` key beside ``attributes``, loads too::

    thriller:
      description: "..."
      scoring_weights: {suspense: 0.35, ambiguity: 0.25, darkness: 0.2, emotional_tension: 0.2}
    comedy: {humor: 0.4, lightheartedness: 0.25, timing: 0.2, absurdity: 0.15}

``--profile`` takes a shipped profile's NAME (``profiles/*.yaml`` beside this module: thriller,
action, drama, comedy), a FILE holding one profile, or FILE:NAME. Weights are numbers >= 0 with
a positive sum; they need not add up to 1 (``resolve`` normalises them).

``resolve`` matches a profile to the attributes a results folder holds: weights on attributes
the results lack are dropped with a warning that names them and the share of the weight they
carried, and the rest are normalised to sum to 1; a profile none of whose attributes exist is
a ``UsageError`` (exit code 2). Every problem with a profile is a UsageError naming the file
and the key, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from client.errors import UsageError
from client.trailer import log
from qwen_server.contract.vocabulary import ATTRIBUTE_NAME_RE

PROFILE_SUFFIXES = (".yaml", ".yml", ".json")
WEIGHTS_KEY = "scoring_weights"
GROUP_KEY = "genre_profiles"


@dataclass(frozen=True)
class Profile:
    """A genre profile: ``weights`` as written (attribute -> weight >= 0, positive sum) and
    where it came from (``source``: the file, or ``shipped``)."""

    name: str
    weights: Mapping[str, float]
    source: str
    description: str = ""


@dataclass(frozen=True)
class Weighting:
    """A profile resolved against the results' attributes: ``weights`` over the attributes
    that exist, normalised to sum to 1 (profile order), ``missing`` the profile's attributes
    the results lack and ``missing_share`` the part of the profile's weight they carried."""

    profile: Profile
    weights: Mapping[str, float]
    missing: tuple[str, ...]
    missing_share: float


def shipped_names() -> list[str]:
    """Names of the profiles shipped with the client (``profiles/*.yaml``), sorted."""
    folder = resources.files("client.trailer") / "profiles"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _is_file_spec(value: str) -> bool:
    """Whether a --profile value names a file (a path, a profile file suffix or a file that
    exists) rather than a shipped profile's name."""
    return (
        value.lower().endswith(PROFILE_SUFFIXES)
        or "/" in value
        or "\\" in value
        or Path(value).expanduser().is_file()
    )


def load_profile(spec: str) -> Profile:
    """The profile ``--profile spec`` names: NAME (shipped), FILE or FILE:NAME."""
    if not spec.strip():
        raise UsageError("--profile: empty value (a profile NAME, FILE or FILE:NAME)")
    path_part, _, name_part = spec.rpartition(":")
    if (
        path_part
        and name_part
        and _is_file_spec(path_part)
        and not Path(spec).expanduser().is_file()
    ):
        return _from_file(Path(path_part).expanduser(), name_part)
    if _is_file_spec(spec):
        return _from_file(Path(spec).expanduser(), None)
    names = shipped_names()
    if spec not in names:
        raise UsageError(
            f"--profile {spec!r}: no such shipped profile (shipped: {', '.join(names)}); "
            "or give a profile FILE (YAML) or FILE:NAME"
        )
    text = (resources.files("client.trailer") / "profiles" / f"{spec}.yaml").read_text("utf-8")
    profiles = parse_profiles(_parse_yaml(text, f"shipped profile {spec}"), "shipped")
    return profiles[spec]


def _from_file(path: Path, name: str | None) -> Profile:
    """One profile of the file ``path``: the one named ``name``, or its only one."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--profile: {source} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--profile: {source} is not UTF-8 text") from None
    profiles = parse_profiles(_parse_yaml(text, source), source)
    if name is None:
        if len(profiles) > 1:
            raise UsageError(
                f"--profile: {source} holds {len(profiles)} profiles ({', '.join(profiles)}); "
                f"choose one with {source}:NAME"
            )
        return next(iter(profiles.values()))
    if name not in profiles:
        raise UsageError(
            f"--profile: {source} has no profile {name!r} (it holds {', '.join(profiles)})"
        )
    return profiles[name]


def _parse_yaml(text: str, source: str) -> Any:
    """YAML (JSON included) with duplicate keys refused, errors naming ``source`` and line."""
    import yaml

    class _UniqueKeyLoader(yaml.SafeLoader):
        """The safe loader, refusing a key written twice in one mapping."""

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise UsageError(f"--profile: {source}: line {line}: key {key!r} written twice")
            seen.add(key)
        return loader.construct_mapping(node)

    _UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"--profile: {source} is not valid YAML{at}") from None


def parse_profiles(data: Any, source: str) -> dict[str, Profile]:
    """Every profile of a parsed file, in file order (UsageError naming the key at fault)."""
    if isinstance(data, dict) and GROUP_KEY in data:
        data = data[GROUP_KEY]
        where = f"{source}: {GROUP_KEY}"
    else:
        where = source
    if not isinstance(data, dict) or not data:
        raise UsageError(
            f"--profile: {where} must map profile names to weights "
            f"(e.g. 'thriller: {{{WEIGHTS_KEY}: {{suspense: 0.6, darkness: 0.4}}}}')"
        )
    profiles: dict[str, Profile] = {}
    for name, body in data.items():
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"--profile: {where}: profile name {name!r} is not a string")
        profiles[name] = _parse_profile(name, body, f"{where}: {name}", source)
    return profiles


def _parse_profile(name: str, body: Any, where: str, source: str) -> Profile:
    """One profile: ``{scoring_weights: {...}, ...}`` or a plain ``{attribute: weight}``."""
    if not isinstance(body, dict):
        raise UsageError(f"--profile: {where} must be a mapping of attribute to weight")
    description = ""
    if WEIGHTS_KEY in body:
        description = str(body.get("description") or "")
        body, where = body[WEIGHTS_KEY], f"{where}.{WEIGHTS_KEY}"
        if not isinstance(body, dict):
            raise UsageError(f"--profile: {where} must be a mapping of attribute to weight")
    if not body:
        raise UsageError(f"--profile: {where} has no weights")
    weights: dict[str, float] = {}
    for attribute, weight in body.items():
        if not isinstance(attribute, str) or not ATTRIBUTE_NAME_RE.fullmatch(attribute):
            raise UsageError(
                f"--profile: {where}: {attribute!r} is not an attribute name "
                "(lower-case letters, digits and '_', starting with a letter)"
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise UsageError(f"--profile: {where}.{attribute}: weight {weight!r} is not a number")
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"--profile: {where}.{attribute}: weight {weight!r} must be >= 0")
        weights[attribute] = float(weight)
    if sum(weights.values()) <= 0:
        raise UsageError(f"--profile: {where}: the weights add up to 0")
    return Profile(name=name, weights=weights, source=source, description=description)


def resolve(profile: Profile, available: Sequence[str]) -> Weighting:
    """``profile`` over the attributes ``available`` in the results (see the module doc)."""
    present = {a: w for a, w in profile.weights.items() if a in set(available)}
    missing = tuple(a for a in profile.weights if a not in present)
    total = sum(profile.weights.values())
    missing_share = sum(profile.weights[a] for a in missing) / total
    kept = sum(present.values())
    if kept <= 0:
        holds = ", ".join(available) if available else "no attributes (a 'shots' run?)"
        raise UsageError(
            f"--profile {profile.name}: the results have none of its attributes "
            f"({', '.join(profile.weights)}); they hold {holds}. Analyse the film with a "
            "vocabulary that has them (qwen-client analyze --attributes FILE) or pick "
            "another profile"
        )
    if missing:
        log.warning(
            "profile %s: the results lack %s (%.0f%% of the profile's weight); scoring with %s",
            profile.name,
            ", ".join(missing),
            100 * missing_share,
            ", ".join(a for a in present if present[a] > 0),
        )
    return Weighting(
        profile=profile,
        weights={a: w / kept for a, w in present.items()},
        missing=missing,
        missing_share=missing_share,
    )


__all__ = ["Profile", "Weighting", "load_profile", "resolve", "shipped_names"]
