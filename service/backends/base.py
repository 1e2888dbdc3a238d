"""Where a job's driver runs: the scheduler's backends.

The scheduler (:mod:`service.core.scheduler`) owns the queue, admission, quotas and every job
state transition; a backend only starts, follows and stops drivers, reads their logs and
says what capacity the queue fills. Two are here and in :mod:`service.backends.ray_jobs`:

- :class:`LocalProcesses`: a driver subprocess per job on this host (the default);
- ``RayJobsBackend``: a Ray job per job on a cluster (``BIOPROP_RAY_JOBS_URL``).

Both give the driver the environment of one builder (:func:`service.backends.driver_env.job_env`).
A backend reports what the scheduler cannot decide itself through two exceptions:
:class:`Unavailable` (it cannot act now, e.g. the cluster is unreachable: the job waits in
the queue and this pass stops) and :class:`Lost` (it no longer knows the driver: the job is
queued again and resumes from its checkpoints). Routes never ask which backend runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi.responses import Response

from service.core import store
from service.core.resources import Resources
from service.core.settings import Settings

__all__ = ["Adopted", "Backend", "Lost", "Unavailable"]


class Unavailable(RuntimeError):
    """The backend cannot act now; the message says what the job waits for."""


class Lost(RuntimeError):
    """The backend no longer knows this job's driver."""


@dataclass(frozen=True)
class Adopted:
    """What to do with a RUNNING/CANCELLING job found in the store at start-up: ``follow``
    its driver (``handle``), ``unclaim`` it (it never started), ``requeue`` it (its driver
    died unwatched, without a result) or ``finish`` it (its driver ended)."""

    action: Literal["follow", "unclaim", "requeue", "finish"]
    handle: Any = None


class Backend:
    """How drivers run. ``handle``: whatever the backend needs to follow one driver."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def capacity(self) -> Resources:
        """What the running jobs may hold together (``CLUSTER_CPUS``/``CLUSTER_GPUS``)."""
        return self.settings.cluster()

    def known_capacity(self) -> tuple[Resources, str]:
        """The capacity the queue last used, without asking anyone (for ``/healthz``), and
        where it came from: ``settings``, ``ray`` or ``unlimited``."""
        unset = self.settings.CLUSTER_CPUS is None and self.settings.CLUSTER_GPUS is None
        return self.settings.cluster(), "unlimited" if unset else "settings"

    def start(self, job: store.Job, job_dir: Path) -> tuple[Any, int | None]:
        """Start the driver of ``job`` (its spec in ``job_dir/spec.json``); ``(handle, pid)``,
        the pid when it runs on this host. Raises :class:`Unavailable` to retry later; any
        other error fails the job with its message."""
        raise NotImplementedError

    def adopt(self, job: store.Job, *, has_result: bool) -> Adopted:
        raise NotImplementedError

    def handle_of(self, job: store.Job) -> tuple[Any, bool]:
        """A started job's handle from its stored record (a cancel reaching a driver this
        process does not follow), or None; and whether to follow it from now on."""
        raise NotImplementedError

    def ended(self, job_id: str, handle: Any) -> bool:
        """Whether the driver has ended (:class:`Unavailable` when the backend cannot tell)."""
        raise NotImplementedError

    def returncode(self, job_id: str, handle: Any, job_dir: Path) -> int | None:
        """An ended driver's exit status (None when unknown), its log and result in
        ``job_dir``; :class:`Lost` when the backend never ran it after all."""
        raise NotImplementedError

    def stop(self, job_id: str, handle: Any, *, force: bool = False) -> None:
        """Ask the driver to stop (SIGTERM: it marks its MLflow runs KILLED), or kill it."""
        raise NotImplementedError

    def overdue(self, job_id: str, handle: Any) -> None:
        """The driver outlived its cancel grace."""

    def logs(
        self, job: store.Job, *, tail: int | None, follow: bool, heartbeat_s: float, idle_s: float
    ) -> Response | None:
        """The driver's log when the backend serves it (a running Ray job's); None: it is
        ``<job_dir>/driver.log`` on this host."""
        return None
