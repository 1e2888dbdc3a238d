"""The built-in names of every extension point: rules, models (with their task), tasks,
optimizers and data kinds, as tuples taken from the catalogues at import.

This module is torch-free, and must stay so: the service validates specs through
``trainers.spec``. The spec and the registries (``register_rule``, ``register_model``,
``register_task``, ``data_pipelines.register_kind``) read the catalogues themselves
(``trainers/catalogue.py``, ``data_pipelines/catalogue.py``), so a plugin's names
(``trainers.plugins``) count as well; optimizers are listed here only.
``tests/trainers/test_names.py`` asserts that every name here is registered.
"""

from __future__ import annotations

from data_pipelines.catalogue import DATA_KINDS
from data_pipelines.registry import InstanceRegistry, check_name
from trainers.catalogue import MODELS, RULES, TASKS

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

#: ``trainers.models.MODELS``: model name -> the task it serves (``trainers.catalogue.MODELS``).
MODEL_TASKS = {name: entry.task for name, entry in MODELS.items()}
MODEL_NAMES = tuple(MODEL_TASKS)

#: ``trainers.optim.OPTIMIZERS``.
OPTIMIZER_NAMES = ("sgd", "adam")

#: ``data_pipelines.KINDS``: listed by ``data_pipelines/catalogue.py`` (re-exported here).
