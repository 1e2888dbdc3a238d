"""The Ray Train launcher: runs one experiment or a sweep to the end, driver side.

``run_experiment(spec)`` prepares the data once, opens the MLflow parent run and runs the
settings as trials of one Ray Tune experiment (:mod:`trainers.sweep`), each trial a child run
and a ``TorchTrainer`` built here from ``spec.scale`` (gloo on CPU, NCCL on GPU;
``FailureConfig(max_failures)`` and at most ``scale.start_retries`` failed start-ups, a
failed start-up giving back its placement group (:mod:`trainers.worker_group`); checkpoints
kept per ``spec.checkpoint``). It joins the Ray
cluster named by ``RAY_ADDRESS`` or starts a local one.

``python -m trainers.launch SPEC [--job-id ID] [--result PATH]`` is the driver process the
service spawns per job (or submits as a Ray job, with ``--spec-env`` and ``--result -``):
exit 0 when every setting finished, 1 when one failed, 143 when terminated (130 on
SIGINT); on SIGTERM or SIGINT it marks its MLflow runs KILLED and exits, which ends every
trial (Tune trial actors, Train controllers and workers are owned by the driver).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainers.contracts import JOB_ID, RESULT_MARKER, JobResult, RunStatus
from trainers.in_trial import runs_in_trial
from trainers.plugins import PLUGINS_ENV
from trainers.ray_setup import environment, init_local_ray, ray_connected
from trainers.spec import ExperimentSpec, load_spec
from trainers.storage import StorageError, check_data_root, check_storage
from trainers.summary import write_summary
from trainers.tracking import (
    default_tracking_uri,
    find_job_runs,
    finish_run,
    reopen_run,
    start_parent,
)
from trainers.trainer import build_trainer, job_storage

__all__ = [
    "PreflightError",
    "Terminated",
    "build_trainer",
    "main",
    "preflight",
    "run_experiment",
    "terminated_on_sigterm",
]

log = logging.getLogger("bioprop.launch")

#: the signals that stop a run the same way: a cancel or a batch scheduler, and Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
TUNE_SIGINT_VAR = "TUNE_DISABLE_SIGINT_HANDLER"


class PreflightError(RuntimeError):
    """What the driver checks before any setting starts failed: the storage location, the
    data root or the data set (the message names the field, file or URI). Nothing ran and
    no MLflow run was made."""


class Terminated(BaseException):
    """Raised in the driver when it receives SIGTERM (cancel) or SIGINT (Ctrl-C);
    ``signum`` is the signal's number. A ``BaseException``, as ``KeyboardInterrupt``: a
    stop request, which no ``except Exception`` (a setting's restart, bookkeeping) takes
    for a failure."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 143 (SIGTERM), 130 (SIGINT)."""
        return 128 + int(self.signum)


def _init_ray(spec: ExperimentSpec) -> None:
    """Join ``RAY_ADDRESS``'s cluster, else start one of our own (with the dashboard only
    when a setting runs a Ray Train run: :func:`trainers.ray_setup.init_local_ray`)."""
    import ray

    if ray.is_initialized():
        return
    ours = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    address = os.environ.get("RAY_ADDRESS")
    if address:  # workers of a running cluster learn the plugins from the job's runtime env
        plugins = os.environ.get(PLUGINS_ENV)
        runtime_env = {"env_vars": {PLUGINS_ENV: plugins}} if plugins else None
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    else:
        init_local_ray(dashboard=not runs_in_trial(spec), log_to_driver=True)  # our own
    for sig, handler in ours.items():  # Ray's core worker installs its own (abort) handler
        if handler is _raise_terminated:
            signal.signal(sig, handler)


_signals_received: list[int] = []


def _raise_terminated(signum: int, frame: Any) -> None:
    _signals_received.append(signum)
    raise Terminated(f"signal {signum}", signum)


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT (Ctrl-C) raise :class:`Terminated` in the main
    thread, so :func:`run_experiment` marks the job's MLflow runs KILLED before the process
    ends (SIGTERM's default action would end it at once, leaving them RUNNING; Tune's own
    SIGINT handler, switched off here by ``TUNE_DISABLE_SIGINT_HANDLER``, would end the
    trials FAILED). Raised inside Ray's Cython code the exception comes back as another one
    (``SystemError``, ``KeyboardInterrupt``); whatever leaves the block after one of these
    signals leaves it as :class:`Terminated`. Elsewhere than the main thread (where Python
    cannot take signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _signals_received.clear()
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in STOP_SIGNALS}
    try:
        with environment({TUNE_SIGINT_VAR: "1"}):
            yield
    except BaseException as exc:
        if _signals_received and not isinstance(exc, Terminated):
            first = _signals_received[0]
            raise Terminated(f"signal {first}", first) from exc
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def preflight(spec: ExperimentSpec) -> ExperimentSpec:
    """What the driver checks before any setting starts: the storage location (a missing
    bucket or credentials) and the data section (:func:`data_pipelines.prepare`: the root,
    the set's annotations or shards; a synthetic set built). Returns the spec with both
    resolved (absolute: Tune starts each trial in a directory of its own);
    :class:`PreflightError` naming the field, file or URI otherwise. Nothing is started."""
    import data_pipelines

    storage = job_storage(spec)
    try:
        check_storage(storage)
        data = data_pipelines.prepare(spec.data, task=spec.task)
    except (StorageError, OSError, ValueError) as exc:
        raise PreflightError(str(exc)) from exc
    return spec.model_copy(update={"data": data, "storage_path": storage})


def run_experiment(
    spec: ExperimentSpec, *, job_id: str | None = None, preflighted: bool = False
) -> dict[str, Any]:
    """Run every setting of ``spec`` as one Ray Tune experiment (:mod:`trainers.sweep`); return
    the parent run id, each child's outcome and, per rule, the best trial.

    A failed setting is recorded (FAILED) and the others go on. Calling it again with the same
    ``job_id`` resumes every unfinished setting from its last checkpoint and skips finished
    ones; without one, a fresh id is drawn so an earlier run of the same spec is never reused.
    ``preflighted``: ``spec`` is :func:`preflight`'s result already (not checked again).
    """
    from trainers.sweep import (
        best_per_rule,
        over_seeds,
        record_best,
        record_over_seeds,
        run_trials,
        runs_in_process,
    )

    job_id = job_id or uuid.uuid4().hex[:12]
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"job_id {job_id!r} must match {JOB_ID.pattern}")
    uri = default_tracking_uri(spec.tracking.uri)
    if not preflighted:
        spec = preflight(spec)
    # one 1-worker setting and no cluster named: trained here, no Ray started
    # a caller's connection (a notebook) names a cluster too
    named = os.environ.get("RAY_ADDRESS") or ray_connected()
    in_process = not named and runs_in_process(spec)
    if not in_process:
        _init_ray(spec)
    earlier_parent, _ = find_job_runs(job_id, uri)
    if earlier_parent is None:
        parent = start_parent(spec, uri=uri, job_id=job_id)
    else:  # the same job started again: resume into its own runs
        parent = earlier_parent.info.run_id
        reopen_run(uri, parent)
        log.info("resuming job %s (parent run %s)", job_id, parent)
    result: dict[str, Any] = {"job_id": job_id, "parent_run_id": parent, "tracking_uri": uri}
    try:
        children = run_trials(
            spec, job_id=job_id, uri=uri, parent=parent, storage_path=spec.storage_path,
            in_process=in_process,
        )  # fmt: skip
    except BaseException as exc:
        _release_interrupted(exc)
        _kill_open_runs(uri, job_id, parent)
        raise
    result["children"] = children
    for child in children:  # the trials log in their own processes; the job log names each
        log.info("setting %r run_id=%s %s", child["setting"], child["run_id"], child["status"])
    result["best"] = best_per_rule(spec, children)
    record_best(uri, parent, result["best"])
    result["over_seeds"] = over_seeds(spec, children)
    record_over_seeds(uri, parent, result["over_seeds"])
    write_summary(uri, parent)  # the comparison on the parent run (also after each child)
    ok = all(c["status"] == RunStatus.FINISHED for c in children)
    status = RunStatus.FINISHED if ok else RunStatus.FAILED
    finish_run(uri, parent, status.value)
    result["status"] = status.value
    return result


def _release_interrupted(exc: BaseException) -> None:
    """Drop what the frames an exception unwound still hold. A signal that interrupts an
    MLflow query leaves its SQLite cursor open in those frames (the traceback keeps them),
    and its read lock would block :func:`_kill_open_runs`' writes until they time out."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # frames still running are left as they are
        exc = exc.__cause__ or exc.__context__
    gc.collect()


def _kill_open_runs(uri: str, job_id: str, parent: str) -> None:
    """Mark the parent and every child still RUNNING as KILLED (the driver is stopping; its
    Tune trials, Train controllers and workers are Ray actors it owns and end with it)."""
    _, children = find_job_runs(job_id, uri)
    for run in children:
        if run.info.status == RunStatus.RUNNING:
            finish_run(uri, run.info.run_id, "KILLED")
    finish_run(uri, parent, "KILLED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.launch", description=__doc__)
    parser.add_argument("spec", nargs="?", help="spec file (YAML or JSON)")
    parser.add_argument(
        "--spec-env", default=None, help="read the spec (JSON) from this environment variable"
    )
    parser.add_argument("--job-id", default=None)
    parser.add_argument(
        "--result",
        default=None,
        help=f"write the result JSON here; '-': print it as the last line, after {RESULT_MARKER!r}",
    )
    args = parser.parse_args(argv)
    if (args.spec is None) == (args.spec_env is None):
        parser.error("give either a spec file or --spec-env")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec = load_spec(os.environ[args.spec_env] if args.spec_env else args.spec)
    try:
        check_data_root(spec.data.root)  # the folder the service admitted, still
    except StorageError as exc:
        log.error("%s", exc)
        return 2
    try:
        with terminated_on_sigterm():
            result = run_experiment(spec, job_id=args.job_id)
        code = 0 if JobResult.model_validate(result).succeeded() else 1
    except PreflightError as exc:
        log.error("%s", exc)
        return 2
    except Terminated as exc:
        log.warning("terminated: MLflow runs marked KILLED")
        result, code = {"status": RunStatus.KILLED.value}, exc.exit_code
    if args.result == "-":  # a Ray job's driver: the service reads it from the job's logs
        print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    elif args.result:
        tmp = Path(args.result).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(args.result)
    return code


if __name__ == "__main__":
    sys.exit(main())
