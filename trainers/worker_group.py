"""What a setting's worker group holds is released when it fails to start.

Ray Train 2.60 starts a worker group in steps: reserve a placement group (one bundle per
worker), start the workers in it, then run the start-up callbacks, among them the one that
sets up the DDP process group (``torch.distributed`` over Gloo or NCCL). When that set-up
fails (a Gloo ``connection refused``, an interface named by ``GLOO_SOCKET_IFNAME`` that a
node lacks), Ray Train raises without shutting the half-started group down, and the
controller, which never got a group back, has nothing to shut down either: the placement
group stays reserved (state CREATED) until the job's driver exits, and the next settings of
the sweep wait for its CPUs. Its placement-group cleaner does not help: the group is
registered with it by a start-up callback that runs after the one that failed.

:class:`ReleaseOnFailedStart` is a Ray Train worker-group callback (Ray's documented hook
for workarounds on its internal callbacks, ``RunConfig(callbacks=...)``): it learns the
group's placement group from a worker once the workers exist, and removes it when the start
fails. The setting then fails (or is retried, per ``FailureConfig``) with every CPU it held
given back.

:func:`failure_config` is the setting's ``FailureConfig``: ``max_failures`` restarts after a
worker failure, and at most ``scale.start_retries`` retried start-ups (Ray's default is
unlimited: a group that can never start, for want of resources or of a working network,
retried forever and held its job RUNNING).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import ray
from ray.train.v2._internal.execution.callback import WorkerGroupCallback

from trainers.spec import ExperimentSpec

__all__ = ["ReleaseOnFailedStart", "failure_config"]

log = logging.getLogger("bioprop.worker_group")


def failure_config(spec: ExperimentSpec):
    """Ray Train's ``FailureConfig`` of one setting of ``spec``."""
    from ray.train import FailureConfig

    return FailureConfig(
        max_failures=spec.max_failures, controller_failure_limit=spec.scale.start_retries
    )


def _current_placement_group() -> Any:
    return ray.util.get_current_placement_group()


class ReleaseOnFailedStart(WorkerGroupCallback):
    """Remove the placement group of a worker group whose start failed after its workers
    were created (runs in the Train controller)."""

    def __init__(self) -> None:
        self._placement_group: Any = None

    @contextlib.contextmanager
    def on_worker_group_start(self) -> Iterator[None]:
        self._placement_group = None
        try:
            yield
        except BaseException:
            self._release()
            raise
        finally:
            self._placement_group = None

    def before_init_train_context(self, workers: list[Any]) -> dict[str, list[Any]]:
        if workers:
            try:
                self._placement_group = ray.get(
                    workers[0].execute_async(_current_placement_group), timeout=60
                )
            except Exception as exc:  # a worker that died: Ray cleans that case up itself
                log.warning("could not learn the worker group's placement group: %r", exc)
        return {}

    def _release(self) -> None:
        group = self._placement_group
        if group is None:
            return
        state = ray.util.placement_group_table(group).get("state")
        if state in (None, "REMOVED"):
            return
        log.warning("worker group failed to start: removing its placement group %s", group.id)
        try:
            ray.util.remove_placement_group(group)
        except Exception as exc:
            log.warning("could not remove placement group %s: %r", group.id, exc)
