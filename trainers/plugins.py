"""Plugins: rules, models, tasks and data kinds that live in a lab's own modules.

``BIOPROP_PLUGINS`` names Python modules, comma-separated (``mylab.rules,mylab.tasks``). Each
is imported once per process, before a spec's names are checked
(``ExperimentSpec``'s first validator calls :func:`load_plugins`), so the CLI, the service's
admission, the driver, every Ray Train worker and Tune trial see the same extension points.
A plugin module does what a built-in one does, in the same two steps:

1. list its descriptors in the catalogues: ``trainers.catalogue.add_rule`` /
   ``add_model`` / ``add_task`` and ``data_pipelines.catalogue.add_kind``;
2. register the implementations: ``@register_rule``, ``@register_model``,
   ``@register_task``, ``@register_kind``.

The modules must be importable wherever bioprop runs (installed in the image, or on
``PYTHONPATH``, which a local driver and a local Ray cluster inherit; a remote cluster gets
``BIOPROP_PLUGINS`` through the job's runtime environment). The service imports them too, to
admit specs: a plugin that imports torch brings torch into the service process.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["PLUGINS_ENV", "load_plugins", "plugin_modules"]

PLUGINS_ENV = "BIOPROP_PLUGINS"

_loaded: set[str] = set()


def plugin_modules(value: str | None = None) -> list[str]:
    """The module names in ``value`` (default ``$BIOPROP_PLUGINS``), in order."""
    raw = os.environ.get(PLUGINS_ENV, "") if value is None else value
    return [name.strip() for name in raw.split(",") if name.strip()]


def load_plugins() -> list[str]:
    """Import every ``BIOPROP_PLUGINS`` module not imported yet; returns the names loaded.
    A module that cannot be imported raises ImportError naming it and the variable."""
    for name in plugin_modules():
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ImportError(
                f"{PLUGINS_ENV}: cannot import plugin module {name!r}: {exc}"
            ) from exc
        _loaded.add(name)
    return sorted(_loaded)
