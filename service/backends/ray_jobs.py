"""Drivers as Ray jobs: the cluster backend beside the local driver subprocesses.

With ``BIOPROP_RAY_JOBS_URL`` (the Ray dashboard, ``http://<head>:8265``) each job's driver,
``<DRIVER_CMD> --spec-env BIOPROP_SPEC --job-id ID --result -``, is submitted through Ray's
Job Submission API (``ray.job_submission.JobSubmissionClient``) instead of being spawned here:

- the **submission id is the bioprop job id**, so a submit retried after a crash between
  submitting and recording finds the job already there and never starts a second driver;
- the spec (JSON) and the driver's environment (``MLFLOW_TRACKING_URI``,
  ``BIOPROP_STORAGE_PATH``, ``BIOPROP_DATA_CACHE``, the cancel grace) travel in the job's
  ``runtime_env.env_vars``; credentials do not (the Ray nodes have their own);
- status, logs (``follow`` included, over Ray's log websocket) and cancel (``stop_job``:
  SIGTERM, SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S`` = ``CANCEL_GRACE_S``) go through
  Ray's job API; when the job ends, its log is copied to ``<job_dir>/driver.log`` and the
  driver's result (its last ``BIOPROP_RESULT`` line) to ``result.json``, where the scheduler
  reads them as it does for a local driver, and where they stay after Ray forgets the job;
- a restarted control plane asks Ray for each RUNNING/CANCELLING job by submission id:
  running -> followed again, ended -> finished, unknown to Ray -> never submitted.

The driver runs on the Ray head (entrypoint resources 0, so a head started with
``--num-cpus 0`` runs drivers and trains nothing); the training workers are placed by Ray
Train on the worker nodes. Ray's token auth (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``) is
read by Ray's client from this process's environment.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from service.backends import Adopted, Backend, LocalProcesses, Lost, Unavailable
from service.backends.driver_env import job_env
from service.core import store
from service.core.logstream import heartbeats
from service.core.resources import Resources
from service.core.scheduler import Scheduler
from service.core.settings import Settings
from service.core.store import is_final
from trainers.contracts import RESULT_MARKER
from trainers.ray_setup import api_server_address

__all__ = [
    "RayJobs",
    "RayJobsError",
    "RayJobsBackend",
    "TERMINAL",
    "logs_response",
    "make_scheduler",
    "parse_result",
]

log = logging.getLogger(__name__)

SPEC_ENV = "BIOPROP_SPEC"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SIGTERM_EXIT = -15  # what a local driver stopped by SIGTERM reports to the scheduler
CAPACITY_TTL_S = 10.0
REQUEST_TIMEOUT_S = 30.0  # Ray's client sets none: a dashboard that hangs must not hang us
RAY = "ray-job"  # the scheduler's handle of a driver that runs as a Ray job


class RayJobsError(RuntimeError):
    """The Ray dashboard could not be reached or refused a request."""


def parse_result(logs: str) -> dict[str, Any] | None:
    """The driver's result: the JSON after the last ``BIOPROP_RESULT`` line of its log."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                value = json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _unknown(exc: Exception) -> bool:
    text = str(exc)
    return "does not exist" in text or "404" in text


class RayJobs:
    """One Ray cluster's job API, as the scheduler and the routes use it."""

    def __init__(self, settings: Settings) -> None:
        assert settings.RAY_JOBS_URL, "RayJobs needs BIOPROP_RAY_JOBS_URL"
        self.settings = settings
        self.url = settings.RAY_JOBS_URL
        self._client: Any = None
        self._lock = threading.Lock()
        self._capacity: tuple[float, Resources] | None = None

    # connection ------------------------------------------------------------------------
    def client(self) -> Any:
        """A ``JobSubmissionClient`` (made once; its constructor asks the dashboard for its
        version, so an unreachable or auth-refusing dashboard fails here, clearly)."""
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                class Client(JobSubmissionClient):
                    def _do_request(self, method, endpoint, **kwargs):  # type: ignore[override]
                        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
                        return super()._do_request(method, endpoint, **kwargs)

                try:
                    # Ray's submission client takes RAY_API_SERVER_ADDRESS, else
                    # RAY_ADDRESS (KubeRay sets it in every pod), over the address it is
                    # given: while it is made, the former names BIOPROP_RAY_JOBS_URL
                    with api_server_address(self.url):
                        self._client = Client(self.url)
                except Exception as exc:  # ConnectionError, RuntimeError (auth), ValueError
                    raise RayJobsError(
                        f"Ray dashboard at BIOPROP_RAY_JOBS_URL={self.url} is not usable: {exc}"
                    ) from exc
            return self._client

    def check(self) -> None:
        """Raise :class:`RayJobsError` unless the Jobs API answers (start-up check)."""
        try:
            self.client().list_jobs()
        except RayJobsError:
            raise
        except Exception as exc:
            raise RayJobsError(f"Ray Jobs API at {self.url} refused a request: {exc}") from exc

    # submitting ------------------------------------------------------------------------
    def entrypoint(self, job_id: str) -> str:
        cmd = [*self.settings.DRIVER_CMD, "--spec-env", SPEC_ENV, "--job-id", job_id]
        return shlex.join([*cmd, "--result", "-"])

    def env_vars(
        self, spec: dict[str, Any], *, owner: str | None = None, data_root: str | None = None
    ) -> dict[str, str]:
        """The driver's ``runtime_env.env_vars``: :func:`service.backends.driver_env.job_env` (the
        same builder as a local driver's), the spec and the cancel grace."""
        grace = max(1, math.ceil(self.settings.CANCEL_GRACE_S))
        env = {SPEC_ENV: json.dumps(spec), "RAY_JOB_STOP_WAIT_TIME_S": str(grace)}
        return env | job_env(self.settings, owner=owner, data_root=data_root)

    def submit(
        self,
        job_id: str,
        spec: dict[str, Any],
        *,
        owner: str | None = None,
        data_root: str | None = None,
    ) -> None:
        """Submit the job's driver with submission id ``job_id``; a job already there under
        that id (a retried submit) is left as it is."""
        client = self.client()
        try:
            client.submit_job(
                entrypoint=self.entrypoint(job_id),
                submission_id=job_id,
                runtime_env={"env_vars": self.env_vars(spec, owner=owner, data_root=data_root)},
                metadata={"bioprop_job_id": job_id, "name": str(spec.get("name", ""))[:200]},
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                log.info("Ray job %s was already submitted; following it", job_id)
                return
            if "No available agent" in str(exc) or "status code 5" in str(exc):
                # the head's job agent is not up yet (or Ray failed transiently): try later
                raise ConnectionError(f"Ray could not take job {job_id} yet: {exc}") from exc
            raise RayJobsError(f"Ray refused job {job_id}: {exc}") from exc

    # following -------------------------------------------------------------------------
    def info(self, job_id: str) -> Any | None:
        """Ray's ``JobDetails`` of the job, None when Ray never saw this submission id."""
        try:
            return self.client().get_job_info(job_id)
        except RuntimeError as exc:
            if _unknown(exc):
                return None
            raise

    def status(self, job_id: str) -> str | None:
        info = self.info(job_id)
        return None if info is None else str(info.status.value)

    def logs(self, job_id: str) -> str:
        try:
            return self.client().get_job_logs(job_id)
        except RuntimeError as exc:
            if _unknown(exc):
                return ""
            raise

    async def follow(self, job_id: str, start: int = 0) -> AsyncIterator[bytes]:
        """The job's log from byte ``start`` on, as the driver writes it, until the job ends
        (Ray's log websocket)."""
        seen = 0
        async for chunk in self.client().tail_job_logs(job_id):
            data = chunk.encode()
            if seen + len(data) > start:
                yield data[max(0, start - seen) :]
            seen += len(data)

    def collect(self, job_id: str, job_dir: Path) -> int | None:
        """Copy an ended job's log and result into ``job_dir``; its exit status as the
        scheduler reads a local driver's (0 ok, -15 stopped, the driver's code, None when
        Ray does not know the job)."""
        info = self.info(job_id)
        if info is None:
            return None
        job_dir.mkdir(parents=True, exist_ok=True)
        text = self.logs(job_id)
        status = str(info.status.value)
        if status == "FAILED" and info.message:
            text += f"\n[ray] job {job_id} FAILED: {info.message}\n"
        (job_dir / "driver.log").write_text(text)
        result = parse_result(text)
        if result is not None:
            tmp = job_dir / "result.tmp"
            tmp.write_text(json.dumps(result, indent=2))
            tmp.replace(job_dir / "result.json")
        if status == "SUCCEEDED":
            return 0
        if status == "STOPPED":
            return SIGTERM_EXIT
        code = getattr(info, "driver_exit_code", None)
        return code if code not in (None, 0) else 1

    def stop(self, job_id: str) -> None:
        """Ask Ray to stop the driver (SIGTERM, then SIGKILL after the job's grace)."""
        try:
            self.client().stop_job(job_id)
        except RuntimeError as exc:
            if not _unknown(exc):
                raise

    # capacity --------------------------------------------------------------------------
    def last_capacity(self) -> Resources | None:
        """The totals of the last :meth:`capacity` read, None before the first."""
        cached = self._capacity
        return None if cached is None else cached[1]

    def capacity(self) -> Resources:
        """CPUs and GPUs of the cluster's alive nodes now (cached ``CAPACITY_TTL_S``)."""
        now = time.monotonic()
        cached = self._capacity
        if cached is not None and now - cached[0] < CAPACITY_TTL_S:
            return cached[1]
        from ray.util.state import list_nodes

        nodes = list_nodes(
            address=self.url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
        )
        cpus = sum(float(n.resources_total.get("CPU", 0)) for n in nodes)
        gpus = sum(float(n.resources_total.get("GPU", 0)) for n in nodes)
        total = Resources(cpus, gpus)
        self._capacity = (now, total)
        return total


class RayJobsBackend(Backend):
    """Drivers as Ray jobs (:class:`RayJobs`): submitted, followed, stopped and read back
    through Ray's job API; the capacity from Ray's alive nodes with ``RAY_CAPACITY``.
    ``handle``: :data:`RAY` (the submission id is the job id)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.ray = RayJobs(settings)
        self._unreachable_logged = 0.0

    def capacity(self) -> Resources:
        """``CLUSTER_CPUS``/``CLUSTER_GPUS`` when set, else what Ray's alive nodes have when
        ``RAY_CAPACITY`` is on, else unlimited."""
        static = self.settings.cluster()
        if not self.settings.RAY_CAPACITY:
            return static
        try:
            live = self.ray.capacity()
        except Exception as exc:  # nothing starts while Ray cannot say what it has
            self._unreachable(exc)
            cached = self.ray.last_capacity()
            live = cached if cached is not None else Resources(0.0, 0.0)
        return self._merged(static, live)

    def _merged(self, static: Resources, live: Resources) -> Resources:
        return Resources(
            live.cpus if self.settings.CLUSTER_CPUS is None else static.cpus,
            live.gpus if self.settings.CLUSTER_GPUS is None else static.gpus,
        )

    def known_capacity(self) -> tuple[Resources, str]:
        """Ray's alive nodes as last read (``ray``; settings still win where set), before
        the first read what the settings say."""
        cached = self.ray.last_capacity()
        if not self.settings.RAY_CAPACITY or cached is None:
            return super().known_capacity()
        return self._merged(self.settings.cluster(), cached), "ray"

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._unreachable_logged > 60:
            log.warning("Ray Jobs API at %s unreachable: %s", self.ray.url, exc)
            self._unreachable_logged = now

    def start(self, job: store.Job, job_dir: Path) -> tuple[Any, int | None]:
        try:
            self.ray.submit(job.id, job.spec, owner=job.owner, data_root=job.data_root)
        except RayJobsError as exc:
            log.error("could not submit job %s: %s", job.id, exc)
            raise RuntimeError(f"Ray refused the driver: {exc}") from exc
        except Exception as exc:  # connection refused or timed out: never started
            self._unreachable(exc)
            raise Unavailable(f"waiting for the Ray cluster at {self.ray.url}: {exc}") from exc
        log.info("job %s submitted as Ray job %s", job.id, job.id)
        return RAY, None

    def adopt(self, job: store.Job, *, has_result: bool) -> Adopted:
        """Ask Ray about the job by its submission id: followed again when running (or when
        Ray cannot answer: the poll finishes it once Ray does), finished when ended, back
        to the queue when Ray never saw it."""
        try:
            status = self.ray.status(job.id)
        except Exception as exc:
            self._unreachable(exc)
            return Adopted("follow", RAY)
        if status is None:
            return Adopted("unclaim")
        return Adopted("finish" if status in TERMINAL else "follow", RAY)

    def handle_of(self, job: store.Job) -> tuple[Any, bool]:
        return RAY, True

    def ended(self, job_id: str, handle: Any) -> bool:
        try:
            status = self.ray.status(job_id)
        except Exception as exc:
            self._unreachable(exc)
            raise Unavailable(str(exc)) from exc
        return status is None or status in TERMINAL

    def returncode(self, job_id: str, handle: Any, job_dir: Path) -> int | None:
        returncode = self.ray.collect(job_id, job_dir)
        if returncode is None:  # Ray lost the job (head restarted without its GCS state)
            raise Lost(job_id)
        return returncode

    def stop(self, job_id: str, handle: Any, *, force: bool = False) -> None:
        """Ray sends SIGTERM, then SIGKILL after the job's ``RAY_JOB_STOP_WAIT_TIME_S``
        (``CANCEL_GRACE_S``); ``force`` cannot shorten a grace Ray holds."""
        self.ray.stop(job_id)

    def logs(
        self, job: store.Job, *, tail: int | None, follow: bool, heartbeat_s: float, idle_s: float
    ) -> Response | None:
        """From Ray while the job runs; once it ended, ``driver.log`` as collected."""
        if not job.started_at or is_final(job.state):
            return None
        return logs_response(self.ray, job.id, tail, follow, heartbeat_s=heartbeat_s, idle_s=idle_s)


def logs_response(
    ray: RayJobs,
    job_id: str,
    tail: int | None,
    follow: bool,
    *,
    heartbeat_s: float,
    idle_s: float,
) -> Response:
    """``GET .../logs`` of a job whose driver runs as a Ray job and has not ended: Ray's log
    (its last ``tail`` lines), then with ``follow`` what the driver writes until it ends,
    with a ``[bioprop]`` status line after ``heartbeat_s`` without output and the stream
    closed after ``idle_s`` (as a local driver's follow, :mod:`service.core.logstream`)."""
    try:
        text = ray.logs(job_id)
    except Exception as exc:
        raise HTTPException(503, f"Ray Jobs API at {ray.url} unreachable: {exc}") from exc
    size = len(text.encode())
    if tail is not None:
        lines = text.splitlines()[-tail:]
        text = "\n".join(lines) + "\n" if lines else ""
    if not follow:
        return PlainTextResponse(text)

    async def stream() -> AsyncIterator[bytes]:
        if text:
            yield text.encode()
        try:
            async for chunk in heartbeats(
                ray.follow(job_id, size),
                words=f"job {job_id} is RUNNING as Ray job {job_id}",
                heartbeat_s=heartbeat_s,
                idle_s=idle_s,
            ):
                yield chunk
        except RuntimeError as exc:  # the websocket closed before the job ended
            yield f"\n[bioprop] log stream from Ray ended: {exc}\n".encode()

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


def make_scheduler(settings: Settings, engine: Any) -> Scheduler:
    """The scheduler with the backend the settings ask for: Ray jobs with ``RAY_JOBS_URL``,
    else local driver subprocesses."""
    backend = RayJobsBackend(settings) if settings.RAY_JOBS_URL else LocalProcesses(settings)
    return Scheduler(settings, engine, backend)
