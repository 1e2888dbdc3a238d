"""The task registry: task name -> :class:`~trainers.worker.Task` instance, filled by
:func:`register_task`."""

from __future__ import annotations

from collections.abc import Callable

from trainers.names import TASK_NAMES, check_name
from trainers.worker import Task

__all__ = ["TASKS", "get_task", "register_task"]

TASKS: dict[str, Task] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register one instance of a :class:`Task` subclass under ``name``
    (refuses duplicates and names missing from ``trainers.names.TASK_NAMES``)."""
    check_name("task", name, TASK_NAMES)

    def deco(cls: type[Task]) -> type[Task]:
        if name in TASKS:
            raise ValueError(f"task {name!r} is already registered")
        TASKS[name] = cls()
        return cls

    return deco


def get_task(name: str) -> Task:
    """The task registered as ``name``; ValueError naming the valid tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
