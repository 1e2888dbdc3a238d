"""A fault Ray Train cannot be made to hit on one setting of a sweep otherwise: DDP pointed
at a network interface that does not exist, for the settings with seed 13 only.

Every Ray cluster the tests start (``tests/conftest.py``'s local one, the multi-host one of
``tests/cluster``) names :class:`BreakDDPOfSeed13` in ``RAY_TRAIN_CALLBACKS`` (Ray Train's
hook for callbacks from the environment). For a Train run whose name holds ``seed_13`` it sets
``GLOO_SOCKET_IFNAME`` to an interface no host has in every worker, just before the worker
group sets up its process group: that set-up then fails as it does on a node whose DDP
interface is missing (after the placement group is reserved and the workers started). Every
other run is left alone. Imported by name (``tests.ray_faults``) in Ray's processes.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

MARK = "seed_13"
CALLBACK = f"{__name__}.BreakDDPOfSeed13"
MISSING_INTERFACE = "nonet13"


def _point_gloo_nowhere() -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = MISSING_INTERFACE


class BreakDDPOfSeed13(WorkerGroupCallback, ControllerCallback):
    def __init__(self) -> None:
        self._broken = False

    def after_controller_start(self, train_run_context: Any) -> None:
        self._broken = MARK in (train_run_context.run_config.name or "")

    def before_init_train_context(self, workers: list[Any]) -> dict[str, list[Any]]:
        if self._broken:
            ray.get([w.execute_async(_point_gloo_nowhere) for w in workers])
        return {}
