"""The task registry: task name -> :class:`~trainers.tasks.base.Task` instance, filled by
:func:`register_task`."""

from __future__ import annotations

from trainers import catalogue
from trainers.names import InstanceRegistry

__all__ = ["TASKS", "get_task", "register_task"]

#: ``@register_task(name)`` on a :class:`Task` subclass registers one instance of it;
#: ``get_task(name)`` returns it (ValueError naming the valid tasks otherwise).
TASKS: InstanceRegistry = InstanceRegistry(
    "task",
    catalogue.TASKS,
    lambda name, known: ValueError(f"unknown task {name!r}; valid tasks: {known}"),
)
register_task = TASKS.register
get_task = TASKS.lookup
