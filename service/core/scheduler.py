"""Scheduler: one driver subprocess per job, watched by a background thread.

A job runs as ``<DRIVER_CMD> <job_dir>/spec.json --job-id ID --result <job_dir>/result.json``
(default ``python -m trainers.launch``) in its own process group, with stdout and stderr in
``<job_dir>/driver.log`` and an environment built from an allow-list
(:mod:`service.backends.driver_env`: ``MLFLOW_TRACKING_URI``, storage settings, never the API tokens).
The driver connects to the Ray cluster and does the training; the scheduler only starts,
follows and stops it, so the service can restart while drivers keep running: on start it
reconciles every RUNNING/CANCELLING job with its process (followed again when alive, final
state from ``result.json`` when gone) and starts PENDING ones.

Exit 0 -> SUCCEEDED; any other exit -> FAILED with the log tail as error. Cancel sends
SIGTERM to the process group (the driver marks its MLflow runs KILLED), then SIGKILL after
``CANCEL_GRACE_S``; the job goes CANCELLING -> CANCELLED. The process side of this
(spawning, signalling, liveness) is :mod:`service.backends.processes`; this module is the state
machine.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from service.backends import Backend, LocalProcesses, Lost, Unavailable
from service.backends.processes import log_tail
from service.core import store
from service.core.resources import Resources, demand, held
from service.core.settings import Settings
from service.core.store import ACTIVE_STATES, JobState, is_final
from service.core.store_check import write_job_record
from trainers.contracts import JobResult
from trainers.spec import ExperimentSpec

__all__ = ["Scheduler"]

REQUEUED = "driver lost while the service was down; re-queued to resume from its last checkpoint"
log = logging.getLogger(__name__)


class Scheduler:
    """Starts, follows and cancels driver subprocesses; keeps the job store in step."""

    def __init__(self, settings: Settings, engine: Engine, backend: Backend | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.backend = backend or LocalProcesses(settings)
        self._procs: dict[str, Any] = {}  # job id -> the backend's handle of its driver
        self._kill_at: dict[str, float] = {}
        # what held the queue at the last pass: (head job id or None for all, reason)
        self._blocked: tuple[str | None, str] | None = None
        # owners passed over at the last pass for their quota, and why
        self._quota_reasons: dict[str | None, str] = {}
        # when this process last started a job of each owner: among owners holding the
        # same, the one served longest ago goes first (turns, not arrival order)
        self._last_start: dict[str | None, float] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bioprop-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; drivers keep running and are followed again on the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def job_dir(self, job_id: str) -> Path:
        return self.settings.RUN_DIR / "jobs" / job_id

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            if self._wake.wait(self.settings.POLL_INTERVAL_S) and not self._stop.is_set():
                # this thread shares the GIL with the event loop: one pass per burst of
                # submissions instead of one per submission keeps request latency low
                self._stop.wait(self.settings.WAKE_DELAY_S)
            self._wake.clear()

    def tick(self) -> None:
        """One pass: finish exited drivers, escalate overdue cancels, start pending jobs, then
        checkpoint the job store (SQLite: the requests' commits never do)."""
        with self._lock:
            self._poll()
            self._escalate()
            self._start_pending()
        store.checkpoint(self.engine)

    # reconciliation --------------------------------------------------------------------
    def _has_result(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / "result.json").exists()

    def reconcile(self) -> None:
        """Match every RUNNING/CANCELLING job in the store with its driver, as the backend
        finds it (:meth:`Backend.adopt`): followed again, back to the queue, or finished."""
        with self._lock, self.engine.connect() as conn:
            for job in store.active_jobs(conn=conn):
                if job.id in self._procs:
                    continue
                adopted = self.backend.adopt(job, has_result=self._has_result(job.id))
                if adopted.action == "unclaim":  # claimed but never started: it may run now
                    store.unclaim(conn=conn, job_id=job.id)
                elif adopted.action == "follow":
                    log.info("following job %s again", job.id)
                    self._procs[job.id] = adopted.handle
                    if job.state is JobState.CANCELLING:
                        self._terminate(job.id, adopted.handle)
                elif adopted.action == "requeue":
                    # the driver died while no service watched it: run the job again; the
                    # driver resumes each setting from its last checkpoint into the same
                    # MLflow runs, so the work already done is kept
                    log.warning("job %s lost its driver (pid %s); re-queued", job.id, job.pid)
                    store.transition(
                        conn=conn,
                        job_id=job.id,
                        from_states=[JobState.RUNNING],
                        to_state=JobState.PENDING,
                        started_at=None,
                        error=REQUEUED,
                    )
                else:
                    self._finish_gone(conn, job.id, adopted.handle)

    # process watching ------------------------------------------------------------------
    def _poll(self) -> None:
        with self.engine.connect() as conn:
            for job_id, handle in list(self._procs.items()):
                try:
                    if not self.backend.ended(job_id, handle):
                        continue
                    self._procs.pop(job_id, None)
                    self._kill_at.pop(job_id, None)
                    self._finish_gone(conn, job_id, handle)
                except Unavailable:
                    return  # the backend cannot tell now: the next pass asks again
                except Exception as exc:  # one job's trouble must not stop the others'
                    self._procs.pop(job_id, None)
                    self._kill_at.pop(job_id, None)
                    self._fail(conn, job_id, f"could not record the driver's end: {exc!r}")

    def _finish_gone(self, conn: Connection, job_id: str, handle: Any) -> None:
        """Finish a job whose driver ended, from the exit status the backend reads; a
        driver the backend lost goes back to the queue (it resumes from its checkpoints)."""
        try:
            returncode = self.backend.returncode(job_id, handle, self.job_dir(job_id))
        except Lost:
            log.warning("the backend no longer knows job %s; re-queued", job_id)
            store.unclaim(conn=conn, job_id=job_id, error=REQUEUED)
            return
        self._finish(conn, job_id, returncode=returncode)

    def _fail(
        self,
        conn: Connection,
        job_id: str,
        reason: str,
        from_states: tuple[JobState, ...] = (JobState.PENDING, *ACTIVE_STATES),
    ) -> None:
        """Mark one job FAILED with ``reason`` (the scheduler could not handle it), so the
        rest of the queue goes on."""
        log.exception("job %s failed in the scheduler: %s", job_id, reason)
        store.transition(
            conn=conn,
            job_id=job_id,
            from_states=from_states,
            to_state=JobState.FAILED,
            error=reason[:4000],
        )

    def _finish(self, conn: Connection, job_id: str, *, returncode: int | None) -> None:
        """Final state of a job whose driver is gone (``returncode`` None: not our child)."""
        job_dir = self.job_dir(job_id)
        result = None
        try:
            result = json.loads((job_dir / "result.json").read_text())
        except (OSError, ValueError):
            pass
        fields: dict[str, Any] = {}
        if isinstance(result, dict):
            fields["result"] = result
            if result.get("parent_run_id"):
                fields["mlflow_parent_run_id"] = result["parent_run_id"]
        move = functools.partial(store.transition, conn=conn, job_id=job_id, **fields)
        if move(from_states=[JobState.CANCELLING], to_state=JobState.CANCELLED):
            log.info("job %s cancelled", job_id)
            return
        parsed = JobResult.parse(result)
        ok = returncode == 0 if returncode is not None else bool(parsed and parsed.succeeded())
        if ok:
            move(from_states=[JobState.RUNNING], to_state=JobState.SUCCEEDED)
            log.info("job %s succeeded", job_id)
            return
        failed = [
            f"{c.rule}: {c.error or (c.status.value if c.status else 'no status')}"
            for c in (parsed.unfinished() if parsed else [])
        ]
        if returncode is None:
            reason = (
                "driver reported failure"
                if isinstance(result, dict)
                else "driver lost: it ended without writing result.json, and its exit status "
                "is unknown to this service process, which did not start it"
            )
        elif returncode < 0:
            reason = f"driver killed by signal {-returncode}"
        else:
            reason = f"driver exited with code {returncode}"
        if failed:
            reason += "; failed settings: " + "; ".join(failed)
        tail = log_tail(job_dir / "driver.log")
        error = f"{reason}\n--- driver.log (tail) ---\n{tail}" if tail else reason
        move(
            from_states=[JobState.RUNNING],
            to_state=JobState.FAILED,
            error=error,
        )
        log.info("job %s failed: %s", job_id, reason)

    def _escalate(self) -> None:
        now = time.monotonic()
        for job_id, deadline in list(self._kill_at.items()):
            if now >= deadline:
                handle = self._procs.get(job_id)
                if handle is not None:
                    self.backend.overdue(job_id, handle)
                self._kill_at.pop(job_id, None)

    # starting --------------------------------------------------------------------------
    def _start_pending(self) -> None:
        """Start PENDING jobs while a slot (``MAX_CONCURRENT_JOBS``) and the cluster's free
        resources (``CLUSTER_CPUS``/``CLUSTER_GPUS`` less what the running jobs hold) allow.

        Fair share across principals: the next job is the oldest of the owner whose running
        jobs hold the least (GPUs, then CPUs, then jobs; ties to the owner served longest
        ago, then the oldest job), so one
        principal's burst of submissions delays another's single job by one slot at most;
        within an owner, higher ``priority`` first, then first come, first served. An owner at its quota (``QUOTA_*``,
        ``QUOTAS``) is passed over, its jobs PENDING with the reason. A job that does not fit
        the free resources holds back the rest of the pass, so a large job is not starved by
        a stream of small ones."""
        with self.engine.connect() as conn:
            active = store.active_jobs(conn=conn)
            slots = self.settings.MAX_CONCURRENT_JOBS - len(active)
            if slots <= 0:
                self._blocked = (
                    None,
                    "waiting for a slot: MAX_CONCURRENT_JOBS="
                    f"{self.settings.MAX_CONCURRENT_JOBS} jobs are running",
                )
                return
            blocked = None
            total = self.capacity()
            free = total - held((j.spec for j in active), total)
            count: dict[str | None, int] = defaultdict(int)
            use: dict[str | None, Resources] = defaultdict(Resources)
            for job in active:
                count[job.owner] += 1
                use[job.owner] = use[job.owner] + held([job.spec], total)
            queues: dict[str | None, deque[store.Job]] = defaultdict(deque)
            for job in store.pending_heads(conn=conn, per_owner=slots):
                queues[job.owner].append(job)
            over_quota: dict[str | None, str] = {}
            while slots > 0 and queues:
                owner = min(
                    queues,
                    key=lambda o: (
                        use[o].gpus,
                        use[o].cpus,
                        count[o],
                        self._last_start.get(o, 0.0),
                        queues[o][0].created_at,  # (the head: the owner's highest priority)
                    ),
                )
                job = queues[owner][0]
                try:
                    # a spec stored by an older version may not validate now: the driver
                    # would refuse it, so it fails here, with the reason, not every tick
                    ExperimentSpec.model_validate(job.spec)
                    need = demand(job.spec, total)
                except Exception as exc:
                    self._fail(
                        conn, job.id, f"cannot be scheduled: {exc}", from_states=(JobState.PENDING,)
                    )
                    self._pop(queues, owner)
                    continue
                reason = self._over_quota(owner, count[owner], use[owner], need)
                if reason is not None:
                    over_quota[owner] = reason
                    del queues[owner]
                    continue
                if not need.fits(free):
                    blocked = (job.id, f"waiting for resources: needs {need}; {free} free")
                    if blocked != self._blocked:
                        log.info("job %s is %s", *blocked)
                    break
                if store.transition(
                    conn=conn,
                    job_id=job.id,
                    from_states=[JobState.PENDING],
                    to_state=JobState.RUNNING,
                    started_at=store.utcnow(),
                ):
                    self._spawn(conn, job)
                    self._last_start[owner] = time.monotonic()
                    free = free - need
                    count[owner] += 1
                    use[owner] = use[owner] + need
                    slots -= 1
                self._pop(queues, owner)
            self._blocked = blocked
            self._quota_reasons = over_quota

    @staticmethod
    def _pop(queues: dict[str | None, deque[store.Job]], owner: str | None) -> None:
        queues[owner].popleft()
        if not queues[owner]:
            del queues[owner]

    def _over_quota(
        self, owner: str | None, running: int, holds: Resources, need: Resources
    ) -> str | None:
        """Why ``owner`` may not start a job needing ``need`` now (None: it may)."""
        jobs, limit = self.settings.quota(owner)
        who = owner or "jobs without an owner"
        if running + 1 > jobs:
            return f"waiting for {who}'s quota: {running} of {jobs:g} running jobs held"
        if not (holds + need).fits(limit):
            return (
                f"waiting for {who}'s quota: the job needs {need}, {who}'s running jobs hold "
                f"{holds} of {limit}"
            )
        return None

    def capacity(self) -> Resources:
        """What the running jobs may hold together, as the backend reads it."""
        return self.backend.capacity()

    def known_capacity(self) -> tuple[Resources, str]:
        """The capacity the queue last used, without asking anyone (for ``/healthz``)."""
        return self.backend.known_capacity()

    def _spawn(self, conn: Connection, job: store.Job) -> None:
        job_dir = self.job_dir(job.id)
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / "spec.json").write_text(json.dumps(job.spec, indent=2))
            (job_dir / "result.json").unlink(missing_ok=True)
            handle, pid = self.backend.start(job, job_dir)
        except Unavailable as exc:  # nothing started: back to the queue, the reason shown
            store.unclaim(conn=conn, job_id=job.id)
            self._blocked = (job.id, str(exc))
            return
        except Exception as exc:
            log.exception("could not start job %s", job.id)
            store.transition(
                conn=conn,
                job_id=job.id,
                from_states=ACTIVE_STATES,
                to_state=JobState.FAILED,
                error=f"could not start the driver: {exc}",
            )
            return
        self._procs[job.id] = handle
        if pid is not None:
            store.update_job(conn=conn, job_id=job.id, pid=pid)
        try:
            write_job_record(job_dir, job, pid=pid)  # what --rebuild-store reads back
        except OSError:
            log.exception("could not write job.json of job %s", job.id)
        log.info("job %s started (%s)", job.id, f"pid {pid}" if pid else "submitted")
        fresh = store.get_job(conn=conn, job_id=job.id)
        if fresh is not None and fresh.state is JobState.CANCELLING:
            self._terminate(job.id, handle)

    def pending_reason(self, job_id: str, *, owner: str | None = None) -> str | None:
        """Why the PENDING job ``job_id`` did not start at the last pass (None: it starts at
        the next one), like a batch scheduler's pending reason."""
        quota = self._quota_reasons.get(owner)
        if quota is not None:
            return quota
        blocked = self._blocked
        if blocked is None:
            return None
        head, reason = blocked
        if head is None or head == job_id:
            return reason
        return f"queued behind job {head}, which is {reason}"

    # cancelling ------------------------------------------------------------------------
    def _terminate(self, job_id: str, handle: Any, *, force: bool = False) -> None:
        self.backend.stop(job_id, handle, force=force)
        grace = 0.0 if force else self.settings.CANCEL_GRACE_S
        self._kill_at.setdefault(job_id, time.monotonic() + grace)
        self._wake.set()

    def cancel(self, job_id: str, *, force: bool = False) -> JobState | None:
        """Cancel a job: PENDING -> CANCELLED now; RUNNING -> CANCELLING, SIGTERM (or SIGKILL
        with ``force``) to the driver's process group. Returns the job's state afterwards
        (a final state unchanged when it had already ended), None when there is no such job."""
        with self._lock, self.engine.connect() as conn:
            job = store.get_job(conn=conn, job_id=job_id)
            if job is None:
                return None
            if is_final(job.state):
                return job.state
            if store.transition(
                conn=conn,
                job_id=job_id,
                from_states=[JobState.PENDING],
                to_state=JobState.CANCELLED,
            ):
                return JobState.CANCELLED
            store.transition(
                conn=conn,
                job_id=job_id,
                from_states=[JobState.RUNNING],
                to_state=JobState.CANCELLING,
            )
            job = store.get_job(conn=conn, job_id=job_id)
            if job is None:
                return None
            if job.state is JobState.CANCELLING:
                stored, follow = self.backend.handle_of(job)
                handle = self._procs.get(job_id, stored)
                if handle is not None:
                    if force:
                        self._kill_at.pop(job_id, None)
                    self._terminate(job_id, handle, force=force)
                    if follow:  # started by another replica: follow it too
                        self._procs.setdefault(job_id, handle)
            return job.state
