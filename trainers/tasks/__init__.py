"""Training tasks: what the one worker loop (:mod:`trainers.worker`) needs to know per task.

``TASKS``: task name (``spec.task``) -> :class:`~trainers.tasks.base.Task`: ``classify``
(:mod:`trainers.tasks.classify`) and ``detect`` (:mod:`trainers.tasks.detect`). Adding a
task is one module here with one ``@register_task`` class, its name in ``trainers/catalogue.py``
and its models registered with it in ``trainers.models``.
"""

from __future__ import annotations

# task modules register themselves on import
from trainers.tasks import classify, detect  # noqa: F401
from trainers.tasks._registry import TASKS, get_task, register_task

__all__ = ["TASKS", "get_task", "register_task"]
