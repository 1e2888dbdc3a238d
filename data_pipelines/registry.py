"""Name registries shared by every layer: :func:`check_name` and :class:`InstanceRegistry`.

The lowest layer holds them (``data_pipelines`` imports neither ``trainers`` nor ``service``),
so the data kinds' registry and the trainers' registries (rules, models, tasks, optimizers)
use the same code; each refuses a name its torch-free name list does not hold.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

__all__ = ["InstanceRegistry", "check_name"]


def check_name(
    what: str, name: str, names: Collection[str], where: str = "trainers/catalogue.py"
) -> None:
    """Refuse to register a ``what`` (rule, model, ...) whose ``name`` is not in ``names``
    (a catalogue dict, read when the implementation registers: a plugin lists its names
    first)."""
    if name not in names:
        raise ValueError(
            f"{what} {name!r} is not listed in {where} ({', '.join(names)}); "
            "add it there so specs can name it"
        )


class InstanceRegistry(dict):
    """name -> one instance of each registered class (tasks, data kinds).

    ``@registry.register(name)`` on a class puts one instance of it under ``name``, refusing
    duplicates and names missing from ``names``; :meth:`lookup` returns it or raises
    ``missing(name, known names)``.
    """

    def __init__(
        self,
        what: str,
        names: Collection[str],
        missing: Callable[[str, str], Exception],
        where: str = "trainers/catalogue.py",
    ) -> None:
        super().__init__()
        self.what, self.names, self.missing, self.where = what, names, missing, where

    def register(self, name: str) -> Callable[[type], type]:
        check_name(self.what, name, self.names, self.where)

        def deco(cls: type) -> type:
            if name in self:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self[name] = cls()
            return cls

        return deco

    def lookup(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise self.missing(name, ", ".join(self)) from None
