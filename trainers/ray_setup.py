"""What every Ray worker process of a bioprop job runs first (``worker_process_setup_hook``).

Ray Train 2.60 starts a detached ``PlacementGroupCleaner`` per run that asks Ray's state
API (served by the dashboard) once a second whether the train controller lives. Without a
dashboard (bioprop's local cluster starts none) every ask fails and logs a warning: one
line a second in the job's log for the whole run. Those warnings are raised to ERROR here;
the cleaner keeps running and a real error still shows.
"""

from __future__ import annotations

import logging

__all__ = ["RUNTIME_ENV", "quiet_logs"]

QUIET_LOGGERS = {
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
}

RUNTIME_ENV = {"worker_process_setup_hook": "trainers.ray_setup.quiet_logs"}


def quiet_logs() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
