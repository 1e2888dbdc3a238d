"""The names of every extension point: rules, models (with their task), tasks, optimizers and
data kinds.

This module is torch-free, and must stay so: the service validates specs through
``trainers.spec``, which takes its names from here, and the service must not import torch.
Each registry refuses a name that is not listed here (``register_rule``,
``register_model``, ``register_optimizer``, ``register_task``,
``data_pipelines.register_kind``), and ``tests/trainers/test_names.py`` asserts that every
name here is registered, so the spec and the registries cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainers.catalogue import RULES, TASKS

__all__ = [
    "DATA_KINDS",
    "MODEL_NAMES",
    "MODEL_TASKS",
    "OPTIMIZER_NAMES",
    "RULE_NAMES",
    "TASK_NAMES",
    "check_name",
    "InstanceRegistry",
]

#: ``trainers.rules.RULES`` (one module per rule under ``trainers/rules/``), from the
#: catalogue's descriptors (``trainers/catalogue.py``).
RULE_NAMES = tuple(RULES)

#: ``trainers.worker.TASKS``: what a model is trained for (``trainers.catalogue.TASKS``).
TASK_NAMES = tuple(TASKS)

#: ``trainers.models.MODELS``: model name -> the task it serves.
MODEL_TASKS = {
    "mlp": "classify",
    "convnet": "classify",
    "resnet20": "classify",
    "resnet18": "classify",
    "alexnet_bn": "classify",
    "retinanet_resnet18_fpn": "detect",
}
MODEL_NAMES = tuple(MODEL_TASKS)

#: ``trainers.optim.OPTIMIZERS``.
OPTIMIZER_NAMES = ("sgd", "adam")

#: ``data_pipelines.KINDS``.
DATA_KINDS = ("imagefolder", "coco", "digits", "synthetic")


def check_name(what: str, name: str, names: tuple[str, ...]) -> None:
    """Refuse to register a ``what`` (rule, model, ...) whose ``name`` is not in ``names``."""
    if name not in names:
        raise ValueError(
            f"{what} {name!r} is not listed in trainers/names.py ({', '.join(names)}); "
            "add it there so specs can name it"
        )


class InstanceRegistry(dict):
    """name -> one instance of each registered class (tasks, data kinds).

    ``@registry.register(name)`` on a class puts one instance of it under ``name``, refusing
    duplicates and names missing from ``names``; :meth:`lookup` returns it or raises
    ``missing(name, known names)``.
    """

    def __init__(
        self, what: str, names: tuple[str, ...], missing: Callable[[str, str], Exception]
    ) -> None:
        super().__init__()
        self.what, self.names, self.missing = what, names, missing

    def register(self, name: str) -> Callable[[type], type]:
        check_name(self.what, name, self.names)

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
