"""The task registry: task name -> :class:`~trainers.worker.Task` instance, filled by
:func:`register_task`."""

from __future__ import annotations

from trainers.names import TASK_NAMES, instance_registrar
from trainers.worker import Task

__all__ = ["TASKS", "get_task", "register_task"]

TASKS: dict[str, Task] = {}


#: ``@register_task(name)`` on a :class:`Task` subclass registers one instance of it.
register_task = instance_registrar(TASKS, "task", TASK_NAMES)


def get_task(name: str) -> Task:
    """The task registered as ``name``; ValueError naming the valid tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
