"""Field types of the experiment spec that refuse what JSON allows but a job cannot use.

Every spec section validates strictly (``strict=True``: ``"2"`` or ``true`` is not an
integer, ``"0.1"`` is not a float), and these annotated types add what strictness does not:

- :data:`Int`: strict integers; each field states its range (``ge``/``le``) and
  :func:`check_bounded` caps every integer at :data:`MAX_INT` (2**53, the largest a JSON
  number carries exactly), so no field reaches arithmetic with ``10**400``;
- :data:`Float`: finite floats (``NaN``, ``Infinity`` and ``1e999`` refused);
- :data:`Text` (and every string field, through :func:`check_bounded`): strings that
  encode as UTF-8 (no lone surrogate) and hold no control character (``Cc``, NUL
  included) and no bidirectional override or isolate (U+202A-U+202E, U+2066-U+2069), which
  make a name display as something else;
- :data:`Name`: :data:`Text` of 1-200 characters, not only whitespace;
- :data:`PathText`: :data:`Text` of 1-4096 characters (a path, a URI), :data:`LocalPath`
  the same as a ``Path``, :data:`DataRoot` a ``Path`` or an object-store URI kept as text;
- :data:`Params`: rule options, a JSON object keyed by identifiers, whose values are
  null, booleans, :data:`Int`, :data:`Float`, :data:`Text` or lists and objects of them,
  nested at most :data:`MAX_DEPTH` levels.

:func:`check_bounded` applies the number and text rules to every field of every section
(the spec's sections run it on all their fields), so a field added without these types is
still bounded. Each refusal is a ``ValueError`` that pydantic reports with the field's path
(422 naming the field through the API).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path, PurePath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
)

from data_pipelines.location import to_root

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "Float",
    "DataRoot",
    "Int",
    "LocalPath",
    "Name",
    "Params",
    "PathText",
    "Text",
    "check_bounded",
    "check_known",
    "check_text",
    "check_value",
]

MAX_INT = 2**53
MAX_DEPTH = 4
MAX_PARAMS = 64
MAX_ITEMS = 10_000
MAX_TEXT = 4096
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_known(what: str, value: str, names: Collection[str], plural: str) -> str:
    """``value`` when ``names`` (a catalogue, read now: plugins add to it) lists it; else
    ValueError ``unknown <what> 'value'; valid <plural>: ...``."""
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; valid {plural}: {', '.join(names)}")
    return value


def check_text(value: str) -> str:
    """``value`` when it encodes as UTF-8 and holds no control or bidi-override character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"must be valid Unicode text: a lone surrogate at position {exc.start}"
        ) from None
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        char, where = bad.group(), bad.start()
        if char in _BIDI:
            raise ValueError(
                f"must not contain the bidirectional control U+{ord(char):04X} "
                f"(position {where}): it makes text display as something else"
            )
        raise ValueError(
            f"must not contain the control character U+{ord(char):04X} (position {where})"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


def _finite(value: float) -> float:
    # AllowInfNan(False) refuses nan/inf given as floats; this also covers ints too large
    # for a float (float(10**400) overflows) should the int bound ever be lifted
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def check_value(value: Any, depth: int = 0) -> Any:
    """A rule-option value: JSON scalars (bounded ints, finite floats, :data:`Text`) and
    lists/objects of them, nested at most :data:`MAX_DEPTH` levels."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"integers must lie within +-2**53, got {value.bit_length()} bits")
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"strings must have at most {MAX_TEXT} characters")
        return check_text(value)
    if depth >= MAX_DEPTH:
        raise ValueError(f"values may nest at most {MAX_DEPTH} levels deep")
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise ValueError(f"lists must have at most {MAX_ITEMS} items")
        return [check_value(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_key(key): check_value(item, depth + 1) for key, item in value.items()}
    raise ValueError(f"unsupported value of type {type(value).__name__}")


def _key(key: Any) -> str:
    if not isinstance(key, str) or not _IDENTIFIER.match(key):
        raise ValueError(
            "option names must be identifiers ([A-Za-z_][A-Za-z0-9_]*, at most 64 "
            f"characters), got {repr(key)[:80]}"
        )
    return key


def _params(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_PARAMS:
        raise ValueError(f"at most {MAX_PARAMS} rule options")
    out = {}
    for key, item in value.items():
        try:
            out[_key(key)] = check_value(item, 1)
        except ValueError as exc:
            raise ValueError(f"option {key!r}: {exc}") from None
    return out


Int = Annotated[int, Strict()]  # bounded by check_bounded and each field's own ge/le
Float = Annotated[float, Strict(), AllowInfNan(False)]
Text = Annotated[str, Strict(), AfterValidator(check_text)]
Name = Annotated[
    str,
    Strict(),
    Field(min_length=1, max_length=200),
    AfterValidator(check_text),
    AfterValidator(_not_blank),
]
PathText = Annotated[
    str, Strict(), Field(min_length=1, max_length=MAX_TEXT), AfterValidator(check_text)
]
Params = Annotated[dict[str, Any], AfterValidator(_params)]


def _path_text(value: Any) -> Any:
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, str):
        if not value or len(value) > MAX_TEXT:
            raise ValueError(f"must have 1 to {MAX_TEXT} characters")
        check_text(value)
    return value


LocalPath = Annotated[Path, Field(strict=False), BeforeValidator(_path_text)]
"""A filesystem path given as :data:`PathText` (or a ``Path`` from Python)."""


def _data_root(value: Any) -> Any:
    value = _path_text(value)
    if isinstance(value, str):
        return to_root(value)
    return value


DataRoot = Annotated[Path | str, BeforeValidator(_data_root)]
"""A local folder (a ``Path``) or an object-store prefix kept as its canonical URI text
(``s3://bucket/prefix``, :func:`data_pipelines.location.parse_data_uri`); never a ``Path``
made of a URI, which would fold its ``//``."""


def check_bounded(value: Any) -> Any:
    """What every spec field must satisfy whatever its declared type: integers within
    :data:`MAX_INT`, finite floats, :func:`check_text` strings, also inside lists (a sweep).
    Sections and rule options validate their own contents."""
    if isinstance(value, list):
        for item in value:
            check_bounded(item)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError("integers must lie within +-2**53")
    elif isinstance(value, float):
        _finite(value)
    elif isinstance(value, str):
        check_text(value)
    return value


class Section(BaseModel):
    """Strict (no ``"2"`` or ``true`` for an integer) and closed (no unknown keys); every
    field bounded by :func:`check_bounded` whatever its type."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        return check_bounded(value)
