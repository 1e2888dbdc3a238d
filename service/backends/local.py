"""The default backend: a driver subprocess per job on this host (:class:`LocalProcesses`)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from service.backends.base import Adopted, Backend
from service.backends.driver_env import driver_env
from service.backends.processes import exit_status, pid_alive, pid_of, signal_group, spawn
from service.core import store

__all__ = ["LocalProcesses"]

log = logging.getLogger(__name__)


class LocalProcesses(Backend):
    """A driver subprocess per job, ``<DRIVER_CMD> <job_dir>/spec.json --job-id ID --result
    <job_dir>/result.json``, in its own session (it outlives the service), its output in
    ``<job_dir>/driver.log`` and an allow-listed environment. ``handle``: the ``Popen`` of
    a driver started here, or the pid of one started by an earlier service process."""

    def start(self, job: store.Job, job_dir: Path) -> tuple[Any, int | None]:
        env = driver_env(self.settings, owner=job.owner, data_root=job.data_root)
        cmd = [
            *self.settings.DRIVER_CMD,
            str(job_dir / "spec.json"),
            "--job-id",
            job.id,
            "--result",
            str(job_dir / "result.json"),
        ]
        proc = spawn(cmd, env=env, log_path=job_dir / "driver.log")
        return proc, proc.pid

    def adopt(self, job: store.Job, *, has_result: bool) -> Adopted:
        if job.pid is None:
            return Adopted("unclaim")  # claimed but never spawned
        if pid_alive(job.pid, job.id):
            return Adopted("follow", job.pid)
        if job.state is store.JobState.RUNNING and not has_result:
            return Adopted("requeue")
        return Adopted("finish", job.pid)

    def handle_of(self, job: store.Job) -> tuple[Any, bool]:
        if job.pid is None:
            return None, False
        return job.pid, pid_alive(job.pid, job.id)

    def ended(self, job_id: str, handle: Any) -> bool:
        return exit_status(handle, job_id)[0]

    def returncode(self, job_id: str, handle: Any, job_dir: Path) -> int | None:
        return exit_status(handle, job_id)[1]

    def stop(self, job_id: str, handle: Any, *, force: bool = False) -> None:
        """SIGTERM the driver alone: it marks its MLflow runs KILLED and shuts down the
        local Ray it started, which shares its process group (signalled too, that Ray would
        die under the driver, which would then hang on it until SIGKILL, its runs left
        RUNNING). ``force``, or :meth:`overdue`: SIGKILL to its whole session."""
        if force:
            signal_group(pid_of(handle), signal.SIGKILL)
            return
        try:
            os.kill(pid_of(handle), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def overdue(self, job_id: str, handle: Any) -> None:
        log.warning("job %s did not stop in time; SIGKILL", job_id)
        signal_group(pid_of(handle), signal.SIGKILL)
