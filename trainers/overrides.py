"""``--set key=value`` overrides of a spec file, checked against the spec's own fields.

``apply_overrides(data, ["data.root=/data/imagenet", "rule.name=[bp, fa]"])`` sets each
dotted path in the spec dict ``data``; the value is parsed as YAML (numbers, booleans,
lists, ``null``; a whole section takes a mapping, ``data.synth={classes: 2}``). A path
that names no spec field is refused with the valid names at that
level; :func:`load_with_overrides` then validates the whole result as
:class:`~trainers.spec.ExperimentSpec`, so a bad value is a pydantic error naming its field.
``rule.params.<key>`` accepts any key: the rule checks its params when it is built.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from trainers.spec import ExperimentSpec, parse_yaml

__all__ = ["OverrideError", "apply_overrides", "load_with_overrides"]


class OverrideError(ValueError):
    """A ``--set`` item that is not ``key=value`` or whose key is no spec field."""


def _section(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``DataSpec`` for ``data``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: Any) -> bool:
    return annotation is dict or typing.get_origin(annotation) is dict


def check_key(key: str) -> bool:
    """Refuse a dotted path that is not a field of the spec (free keys under a dict field);
    True when it names a whole section (``data.synth``), whose value must be a mapping."""
    model: type[BaseModel] = ExperimentSpec
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        fields = model.model_fields
        if part not in fields:
            raise OverrideError(
                f"--set {key}: {here!r} is not a spec field; valid here: {', '.join(fields)}"
            )
        annotation = fields[part].annotation
        if _is_mapping(annotation):
            return False  # e.g. rule.params.<anything>
        sub = _section(annotation)
        if sub is None:
            if i + 1 < len(parts):
                raise OverrideError(f"--set {key}: {here!r} is a value, not a section")
            return False
        model = sub
    return True


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the spec dict ``data`` with every ``key=value`` of ``overrides`` set."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(
                f"--set {item!r}: expected key=value, e.g. data.root=/data/imagenet"
            )
        section = check_key(key)
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise OverrideError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
        if section and not isinstance(value, dict):
            raise OverrideError(
                f"--set {key}: {key!r} is a section; give a mapping ({{field: value}}) "
                "or set one of its fields"
            )
        node = out
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return out


def load_with_overrides(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Load a YAML/JSON spec file, apply ``overrides``, validate the result."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec file not found: {path}")
    data = parse_yaml(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"spec {path} must be a mapping, got {type(data).__name__}")
    return ExperimentSpec.model_validate(apply_overrides(data, overrides))
