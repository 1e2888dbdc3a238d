"""A spec's validation errors as one line a user can act on.

``describe(exc)`` turns pydantic's report (one block per error, each with a link to
pydantic's docs) into ``field.path: message`` items joined by ``"; "``; a field the spec does
not have gets the closest names it does have (``batchsize: no such field; did you mean
batch_size?``).
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["describe"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``X``, ``X | None``, ``Annotated[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names of the model found by following ``path`` from ``model`` (empty when
    the path leaves the models, e.g. into a dict of rule parameters)."""
    current: type[BaseModel] | None = model
    for part in path:
        if current is None or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _one(error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(error.get("loc", ()))
    where = ".".join(str(p) for p in loc) or "spec"
    if error.get("type") == "extra_forbidden" and loc:
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc[:-1]), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"{where}: no such field{hint}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")  # a validator's
    if not loc or message.startswith((f"{where}.", f"{where}:")):  # it names the field itself
        return message
    return f"{where}: {message}"


def describe(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every error of ``exc`` as ``field.path: message``, joined by ``"; "``."""
    if model is None:
        from trainers.spec import ExperimentSpec

        model = ExperimentSpec
    return "; ".join(_one(error, model) for error in exc.errors())
