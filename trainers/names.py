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
