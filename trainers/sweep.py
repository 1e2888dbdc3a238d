"""A job's settings as one Ray Tune experiment, driver side and trial side.

Every point of the sweep grid (``spec.settings()``), and with a ``search:`` section every
sampled trial inside each point, is one Tune trial. A trial is the function
:func:`train_trial`: it opens (or reopens) its MLflow child run, then trains the setting with
the one worker loop (:mod:`trainers.worker`):

- **one worker** (``scale.workers: 1``): in the trial's own process
  (:mod:`trainers.in_trial`), which then holds the worker's CPUs (and GPU). No Ray Train run:
  its controller, worker group and the actors around them cost more than a small setting's
  training.
- **several workers**: the same ``TorchTrainer`` a single run uses, with Ray Train V2's
  ``TuneReportCallback`` forwarding each epoch's metrics to Tune (Ray's documented
  Train-inside-Tune pattern). Such a trial holds no CPU (a 64 MiB memory reservation only),
  so as many trials run at once as the cluster has room for their Train workers.

Either way at most ``sweep.max_concurrent`` at once (:func:`max_concurrent`). A job of one
1-worker setting without a search, where no cluster is named, skips Ray altogether: the
driver trains it itself (:func:`runs_in_process`, :func:`train_setting`).

Outcomes in MLflow: a trial that trained every epoch ends FINISHED; one that raised ends
FAILED (the others go on); one stopped early by ASHA ends FINISHED with the tags
``bioprop.stopped_early=true`` and ``bioprop.stopped_at_epoch`` (set here, in the driver, when
the scheduler decides; the run is closed by a Tune callback, because Tune ends a stopped
trial's process).

A grid's trial processes are reused (``reuse_actors``): a process whose setting finished
trains the next one (its own MLflow child run, its own loop or ``TorchTrainer``), so a setting
does not pay for a new Ray process and its imports (about 5 s here: Ray, torch, MLflow). So
are a search's without ``asha``; with it they are not: a trial ASHA stops is ended by killing
its process, which takes its training (or its Train controller) with it.

Starting the same job again: a grid runs only the settings whose child run has not finished
every epoch, each resuming from its last checkpoint (the ``TorchTrainer`` name, and the
checkpoint folder of a setting trained in its trial, are stable per job and setting); a
search restores its Tune experiment (same sampled values, scheduler and searcher state),
resuming the unfinished trials.

The parent run gets, per rule, the best trial (:func:`record_best`): tags
``bioprop.best.<rule>.run_id`` / ``.setting`` / ``.<metric>`` (its value) and the table
artifact ``best_per_rule.json``; no parent metric, which MLflow's chart view would draw as
a run of its own beside the children's curves.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import pickle
import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainers import notices
from trainers.catalogue import headline
from trainers.contracts import (
    TAG_BOOKKEEPING,
    TAG_CHECKPOINT,
    TAG_ERROR,
    TAG_RULE,
    TAG_SETTING,
    TAG_STOPPED,
    TAG_STOPPED_AT,
    TAG_TRIAL,
    RunStatus,
    best_tag,
)
from trainers.spec import ExperimentSpec, setting_label
from trainers.summary import write_summary
from trainers.tracking import (
    find_job_runs,
    finish_run,
    log_curves,
    model_metrics,
    reopen_run,
    start_child,
)

__all__ = [
    "TAG_STOPPED",
    "TAG_STOPPED_AT",
    "TAG_TRIAL",
    "best_per_rule",
    "max_concurrent",
    "over_seeds",
    "record_best",
    "record_over_seeds",
    "run_trials",
    "runs_in_process",
    "seed_groups",
    "train_setting",
    "train_trial",
]

log = logging.getLogger("bioprop.sweep")

BEST_TABLE = "best_per_rule.json"
SEEDS_TABLE = "over_seeds.json"  # per setting, its metric over the swept seeds
# the trial function only drives Ray Train; it must not take a CPU from the Train workers
TRIAL_RESOURCES = {"cpu": 0, "memory": 64 << 20}
NODE_SHARE = 0.001  # of the driver node's ``node:<ip>`` resource (1.0): 1,000 trials at once


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def trial_resources() -> dict[str, float]:
    """``TRIAL_RESOURCES`` pinned to the driver's node (a share of its ``node:<ip>``
    resource). A trial runs Ray Train's controller on its own node (Train V2 attaches the
    controller to the node of the code that calls ``fit``), so a trial that landed on a
    worker node would die with that node, and with it the setting: pinned beside the driver
    (the head, for a Ray job), losing a worker node only restarts the worker group from the
    last checkpoint (``FailureConfig(max_failures)``)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)
    return {**TRIAL_RESOURCES, f"node:{ip}": NODE_SHARE}


def _resources(spec: ExperimentSpec) -> dict[str, float]:
    """A trial's resources: its one worker's when it trains in the trial process
    (:mod:`trainers.in_trial`; anywhere in the cluster), else :func:`trial_resources`."""
    from trainers.in_trial import runs_in_trial
    from trainers.in_trial import trial_resources as in_trial_resources

    return in_trial_resources(spec) if runs_in_trial(spec) else trial_resources()


def max_concurrent(spec: ExperimentSpec, trials: int, cluster: dict[str, float]) -> int:
    """How many trials train at once: as many settings of ``spec.scale`` as ``cluster``
    (``ray.cluster_resources()``) holds, at least one, at most ``sweep.max_concurrent`` and
    ``trials``."""
    scale = spec.scale
    fit = math.floor(cluster.get("CPU", 0.0) / (scale.workers * scale.cpus_per_worker))
    if scale.gpu:
        fit = min(fit, math.floor(cluster.get("GPU", 0.0) / scale.workers))
    fit = max(1, fit)
    if spec.sweep.max_concurrent:
        fit = min(fit, spec.sweep.max_concurrent)
    return max(1, min(fit, trials))


def is_complete(run, spec: ExperimentSpec) -> bool:
    """A child run that finished every epoch the spec asks for."""
    return (
        run.info.status == RunStatus.FINISHED
        and run.data.metrics.get("epoch", 0) >= spec.schedule.epochs
    )


def _sampled(spec_json: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(spec_json)
    data.pop("search", None)  # a trial is one resolved setting
    for path, value in sample.items():
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def _label(point: str, sample: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return " ".join([point, *(f"{p.rsplit('.', 1)[-1]}={fmt(v)}" for p, v in sample.items())])


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _find_child(uri: str, job_id: str, *, trial_id: str | None, label: str | None):
    """This job's child run for a Tune trial (search) or a grid label, or None."""
    _, children = find_job_runs(job_id, uri)
    for run in children:
        if trial_id is not None and run.data.tags.get(TAG_TRIAL) == trial_id:
            return run
        if label is not None and run.data.tags.get(TAG_SETTING) == label:
            return run
    return None


def _log_final_checkpoint(uri: str, run_id: str, checkpoint: Any, storage: str) -> None:
    """Copy a Ray Train checkpoint's file into the run's artifacts (``checkpoints/``) and
    name it in the tag ``bioprop.checkpoint`` (a full URI on object storage).

    ``checkpoint``: a ``ray.train.Checkpoint`` or the path Tune reported for it (on object
    storage without its scheme: ``storage``, the job's storage location, gives it back, see
    :func:`trainers.storage.checkpoint_uri`). Bookkeeping, not training: whatever fails
    here (storage, MLflow) is logged and put on the run as ``bioprop.bookkeeping_error``,
    never raised."""
    from ray.train import Checkpoint

    from trainers.storage import checkpoint_uri
    from trainers.worker import CHECKPOINT_FILE

    path = checkpoint if isinstance(checkpoint, str) else checkpoint.path
    location = checkpoint_uri(storage, path)
    try:
        if isinstance(checkpoint, str):
            checkpoint = Checkpoint(location)
        client = _client(uri)
        client.set_tag(run_id, TAG_CHECKPOINT, location)
        with checkpoint.as_directory() as folder:
            client.log_artifact(run_id, str(Path(folder) / CHECKPOINT_FILE), "checkpoints")
    except Exception as exc:
        log.warning("run %s: checkpoint %s not copied to MLflow: %r", run_id, location, exc)
        _tag_quietly(uri, run_id, TAG_BOOKKEEPING, f"{location}: {exc!r}"[:5000])


def _tag_quietly(uri: str, run_id: str, key: str, value: str) -> None:
    """Set a tag; a failure to do so is only logged (the tracking server may be what broke)."""
    try:
        _client(uri).set_tag(run_id, key, value)
    except Exception as exc:
        log.warning("run %s: could not set tag %s: %r", run_id, key, exc)


TAG_SUMMARY_AT = "bioprop.summary_written_at"
SUMMARY_EVERY_S = 60.0


def refresh_summary(uri: str, parent: str, every_s: float = SUMMARY_EVERY_S) -> None:
    """Rewrite the parent's sweep summary as a child finishes, at most once per ``every_s``
    seconds (the time of the last one is the parent's tag ``bioprop.summary_written_at``):
    each rewrite reads and draws every child, so a 40-setting sweep redrawing it after each
    setting spent its time there. The driver writes the final one when all have finished."""
    import time

    try:
        client = _client(uri)
        last = float(client.get_run(parent).data.tags.get(TAG_SUMMARY_AT, 0) or 0)
        if time.time() - last < every_s:
            return
        client.set_tag(parent, TAG_SUMMARY_AT, repr(time.time()))
    except Exception as exc:  # bookkeeping: the summary is a reading aid
        log.warning("parent run %s: summary not refreshed: %r", parent, exc)
        return
    write_summary(uri, parent)


def train_trial(config: dict[str, Any]) -> None:
    """The Tune trial: :func:`train_setting` with this trial's id, reporting to Tune."""
    import ray.tune

    train_setting(config, trial_id=ray.tune.get_context().get_trial_id())


def train_setting(config: dict[str, Any], *, trial_id: str | None) -> None:
    """One setting (a grid point, with the sampled values of a search) trained into its
    MLflow child run: in this process (one worker) or by a ``TorchTrainer``. ``trial_id``:
    the Tune trial running it; None for a single setting the driver trains itself
    (:func:`run_trials`, ``in_process``), whose epochs then go to no Tune session.

    ``config``: ``point`` (``{"label", "spec"}``: the grid point, resolved, data prepared),
    ``sample`` (searched field path -> value), ``parent``, ``uri``, ``job_id``, ``search``.
    Raises what ended the setting, after closing its run FAILED.
    """
    from trainers.in_trial import fit_in_trial, runs_in_trial
    from trainers.trainer import build_trainer, train_run_name, worker_config

    uri, job_id, search = config["uri"], config["job_id"], config["search"]
    sample = dict(config.get("sample") or {})
    spec = ExperimentSpec.model_validate(_sampled(config["point"]["spec"], sample))
    label = _label(config["point"]["label"], sample)
    notices.install(label)
    earlier = _find_child(
        uri, job_id, trial_id=trial_id if search else None, label=None if search else label
    )
    if earlier is not None and is_complete(earlier, spec):
        log.info("setting %r already finished in run %s", label, earlier.info.run_id)
        return
    if earlier is not None:
        run_id = earlier.info.run_id
        reopen_run(uri, run_id)
    else:
        run_id = start_child(
            spec, uri=uri, parent_run_id=config["parent"], job_id=job_id, setting=label
        )
    if trial_id is not None:
        _client(uri).set_tag(run_id, TAG_TRIAL, trial_id)
    log.info("setting %r run_id=%s trial %s", label, run_id, trial_id)
    # a search trial's Train run is named by its trial (two samples may share a label)
    name = trial_id if search and trial_id else label
    try:
        if runs_in_trial(spec):  # one worker: the loop runs here, no Ray Train run
            checkpoint = fit_in_trial(
                worker_config(spec, run_id=run_id, uri=uri, label=label),
                spec,
                train_run_name(spec, name, job_id),
                to_tune=trial_id is not None,
            )
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            trainer = build_trainer(
                spec,
                run_id=run_id,
                uri=uri,
                job_id=job_id,
                setting=name,
                callbacks=[TuneReportCallback()],
                label=label,
            )
            checkpoint = trainer.fit().checkpoint
    except Exception as exc:
        _client(uri).set_tag(run_id, TAG_ERROR, f"{type(exc).__name__}: {exc}"[:5000])
        log_curves(uri, run_id)
        finish_run(uri, run_id, "FAILED")
        if trial_id is not None:  # the driver training it writes the summary next
            refresh_summary(uri, config["parent"])
        raise
    if checkpoint is not None:
        _log_final_checkpoint(uri, run_id, checkpoint, spec.storage_path)
    log_curves(uri, run_id)
    finish_run(uri, run_id, "FINISHED")
    if trial_id is not None:  # the parent's summary, as children finish
        refresh_summary(uri, config["parent"])


def _bookkeeping_callback(uri: str, job_id: str, storage: str):
    from ray.tune import Callback

    class _Bookkeeping(Callback):
        """Driver side: close the child run of a trial Tune ended from outside (an ASHA stop,
        a trial process that died). An error here would end the whole Tune experiment, every
        other trial with it: it is logged, and put on the trial's run when MLflow answers."""

        def _run(self, trial):
            return _find_child(uri, job_id, trial_id=trial.trial_id, label=None)

        def on_trial_complete(self, iteration, trials, trial, **info):
            try:
                self._close_stopped(trial)
            except Exception as exc:
                log.exception("trial %s: closing its MLflow run failed", trial.trial_id)
                with _quiet():
                    run = self._run(trial)
                    if run is not None:
                        _tag_quietly(uri, run.info.run_id, TAG_BOOKKEEPING, repr(exc)[:5000])

        def _close_stopped(self, trial) -> None:
            run = self._run(trial)
            if run is None or run.info.status != RunStatus.RUNNING:
                return  # the trial function closed its run itself
            if run.data.tags.get(TAG_STOPPED) != "true":
                return  # not stopped by the scheduler: it ends by itself, or is killed
            run_id = run.info.run_id
            last = trial.last_result or {}
            if last.get("checkpoint_path"):
                _log_final_checkpoint(uri, run_id, last["checkpoint_path"], storage)
            log_curves(uri, run_id)
            finish_run(uri, run_id, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            with _quiet():
                run = self._run(trial)
                if run is not None and run.info.status == RunStatus.RUNNING:
                    finish_run(uri, run.info.run_id, "FAILED")

    return _Bookkeeping()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Log, never raise, what fails inside (driver-side bookkeeping in Tune callbacks)."""
    try:
        yield
    except Exception:
        log.exception("bookkeeping failed")


def _per_point_asha(search, epochs: int, uri: str, job_id: str):
    """ASHA (``time_attr=epoch``) kept per grid point: a rule's trials are cut against that
    rule's trials only, so every rule gets its own best learning rate. A stop decision tags
    the trial's child run (``bioprop.stopped_early``, ``bioprop.stopped_at_epoch``) there and
    then; the driver's callback closes the run once Tune has ended the trial."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

    class PerPointASHA(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self._subs: dict[str, AsyncHyperBandScheduler] = {}

        def _sub(self, trial) -> AsyncHyperBandScheduler:
            key = trial.config["point"]["label"]
            if key not in self._subs:
                self._subs[key] = AsyncHyperBandScheduler(
                    time_attr="epoch",
                    metric=search.metric,
                    mode=search.mode,
                    max_t=epochs,
                    grace_period=search.asha.grace_period,
                    reduction_factor=search.asha.reduction_factor,
                    stop_last_trials=False,  # the last epoch ends by itself, checkpoint logged
                )
            return self._subs[key]

        def set_search_properties(self, metric, mode, **spec) -> bool:
            return True

        def on_trial_add(self, tune_controller, trial):
            self._sub(trial).on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result):
            decision = self._sub(trial).on_trial_result(tune_controller, trial, result)
            epoch = int(result.get("epoch") or 0)
            if decision == TrialScheduler.STOP and epoch < epochs:
                with _quiet():  # an MLflow error must not end the experiment
                    run = _find_child(uri, job_id, trial_id=trial.trial_id, label=None)
                    if run is not None:
                        client = _client(uri)
                        client.set_tag(run.info.run_id, TAG_STOPPED, "true")
                        client.set_tag(run.info.run_id, TAG_STOPPED_AT, str(epoch))
                log.info("trial %s stopped early at epoch %d", trial.trial_id, epoch)
            return decision

        def on_trial_complete(self, tune_controller, trial, result):
            sub = self._sub(trial)
            if trial.trial_id in sub._trial_info:
                sub.on_trial_complete(tune_controller, trial, result)

        def on_trial_remove(self, tune_controller, trial):
            sub = self._sub(trial)
            if trial.trial_id in sub._trial_info:
                sub.on_trial_remove(tune_controller, trial)

        def debug_string(self) -> str:
            return "\n".join(f"{k}: {s.debug_string()}" for k, s in self._subs.items())

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as f:
                pickle.dump(self._subs, f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                self._subs = pickle.load(f)

    return PerPointASHA()


def _per_point_optuna(search, points: list[dict[str, Any]], constants: dict[str, Any]):
    """One Optuna (TPE) study per grid point, dealt round-robin: each rule's learning rate
    is modelled from that rule's trials only."""
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    space = {path: dist.tune_domain() for path, dist in search.space.items()}

    class PerPointOptuna(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=search.metric, mode=search.mode)
            self._subs = {
                p["label"]: OptunaSearch(space=dict(space), metric=search.metric, mode=search.mode)
                for p in points
            }
            self._left = {p["label"]: search.num_samples for p in points}
            self._owner: dict[str, str] = {}

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str):
            for point in sorted(points, key=lambda p: -self._left[p["label"]]):
                label = point["label"]
                if self._left[label] <= 0:
                    continue
                sample = self._subs[label].suggest(trial_id)
                if sample is None:
                    continue
                self._left[label] -= 1
                self._owner[trial_id] = label
                return {**constants, "point": point, "sample": sample}
            return Searcher.FINISHED

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self._owner:
                self._subs[self._owner[trial_id]].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            if trial_id in self._owner:
                self._subs[self._owner[trial_id]].on_trial_complete(trial_id, result, error)

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as f:
                pickle.dump((self._subs, self._left, self._owner), f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                self._subs, self._left, self._owner = pickle.load(f)

    return PerPointOptuna()


def run_trials(
    spec: ExperimentSpec,
    *,
    job_id: str,
    uri: str,
    parent: str,
    storage_path: str,
    in_process: bool = False,
) -> list[dict[str, Any]]:
    """Run every setting of ``spec`` as trials of one Tune experiment; return one entry per
    child run (``rule``, ``setting``, ``run_id``, ``status``, ``metrics``, ``checkpoint``,
    ``skipped``, ``stopped_early``), grid order first. ``in_process`` (a single 1-worker
    setting without a search, :func:`runs_in_process`): the setting trains in this process,
    with no Ray at all.

    Trials that fail are FAILED entries; the others still run. Raises only what stops the
    whole experiment (e.g. the driver's termination)."""
    search = spec.search
    _, earlier_children = find_job_runs(job_id, uri)
    for run in earlier_children:  # left RUNNING by a driver that died; resumed ones reopen
        if run.info.status == RunStatus.RUNNING:
            finish_run(uri, run.info.run_id, "KILLED")
    earlier = {r.data.tags.get(TAG_SETTING): r for r in earlier_children}
    points = []
    skipped = set()
    for label, setting in spec.settings():
        done = earlier.get(label)
        if search is None and done is not None and is_complete(done, setting):
            log.info("setting %r already finished in run %s", label, done.info.run_id)
            skipped.add(done.info.run_id)
            continue
        points.append({"label": label, "spec": setting.model_dump(mode="json")})
    name = _safe(f"{spec.name}-{job_id}")
    constants = {"parent": parent, "uri": uri, "job_id": job_id, "search": search is not None}
    per_point = search.trials_per_point() if search else 1
    trials = len(points) * per_point
    if in_process and points:
        _train_here({**constants, "point": points[0], "sample": {}})
    elif points:
        _run_tune(spec, points, constants, trials, name, storage_path)
    return _entries(spec, job_id, uri, skipped)


def _run_tune(spec, points, constants, trials: int, name: str, storage_path: str) -> None:
    """The settings ``points`` as the trials of one Tune experiment (restored, for a search
    started before)."""
    import ray
    from ray import tune

    search = spec.search
    path = f"{storage_path.rstrip('/')}/{name}"  # a folder or a URI (s3://...)
    uri, job_id = constants["uri"], constants["job_id"]
    concurrent = max_concurrent(spec, trials, ray.cluster_resources())
    log.info("%d trials, up to %d at once", trials, concurrent)
    trainable = tune.with_resources(train_trial, _resources(spec))
    if search is not None and tune.Tuner.can_restore(path):
        log.info("restoring the search experiment at %s", path)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(search, points, constants),
            tune_config=_tune_config(spec, points, constants, concurrent),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                callbacks=[_bookkeeping_callback(uri, job_id, storage_path)],
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=0,
            ),
        )
    tuner.fit()


def runs_in_process(spec: ExperimentSpec) -> bool:
    """Whether the driver trains ``spec`` itself, without Ray: one setting of one worker, no
    search. (Called where no cluster is named: on a cluster the setting goes to the cluster.)"""
    from trainers.in_trial import runs_in_trial

    return spec.search is None and spec.sweep_size() == 1 and runs_in_trial(spec)


def _train_here(config: dict[str, Any]) -> None:
    """:func:`train_setting` in the driver; its failure is the setting's (recorded FAILED on
    its run), not the job's: the entries report it as a Tune trial's would be."""
    try:
        train_setting(config, trial_id=None)
    except Exception:
        log.exception("setting %r failed", config["point"]["label"])
    finally:
        notices.uninstall()


def _param_space(search, points, constants) -> dict[str, Any]:
    from ray import tune

    if search is not None and search.algorithm == "optuna":
        return {}  # the per-point searcher builds every config
    space: dict[str, Any] = {**constants, "point": tune.grid_search(points)}
    if search is not None:
        space["sample"] = {path: dist.tune_domain() for path, dist in search.space.items()}
    return space


def _tune_config(spec: ExperimentSpec, points, constants, concurrent: int):
    from ray import tune

    search = spec.search
    if search is None:  # a trial's process trains the next setting too (see the module)
        return tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrent, reuse_actors=True)
    optuna = search.algorithm == "optuna"
    return tune.TuneConfig(
        metric=search.metric,
        mode=search.mode,
        # a searcher is asked once per trial; a grid repeats itself num_samples times
        num_samples=len(points) * search.num_samples if optuna else search.num_samples,
        max_concurrent_trials=concurrent,
        reuse_actors=search.asha is None,  # ASHA ends a stopped trial by ending its process
        search_alg=_per_point_optuna(search, points, constants) if optuna else None,
        scheduler=(
            _per_point_asha(search, spec.schedule.epochs, constants["uri"], constants["job_id"])
            if search.asha
            else None
        ),
    )


def _summary_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The whole-model metrics (per-layer ``<stat>/<layer>`` ones stay in MLflow)."""
    return model_metrics(metrics)


def _entries(
    spec: ExperimentSpec, job_id: str, uri: str, skipped: set[str]
) -> list[dict[str, Any]]:
    """Per child run of the job, what the driver reports (grid order, then start time)."""
    _, children = find_job_runs(job_id, uri)
    order = {label: i for i, (label, _) in enumerate(spec.settings())}
    entries = []
    for run in children:
        tags = run.data.tags
        label = tags.get(TAG_SETTING) or tags.get(TAG_RULE)
        point = next((p for p in order if label == p or label.startswith(p + " ")), label)
        entry: dict[str, Any] = {
            "rule": tags.get(TAG_RULE),
            "setting": label,
            "run_id": run.info.run_id,
            "status": run.info.status,
            "metrics": _summary_metrics(dict(run.data.metrics)),
            "skipped": run.info.run_id in skipped,
            "stopped_early": tags.get(TAG_STOPPED) == "true",
            "_order": (order.get(point, len(order)), run.info.start_time or 0),
        }
        if TAG_STOPPED_AT in tags:
            entry["stopped_at_epoch"] = int(tags[TAG_STOPPED_AT])
        if TAG_CHECKPOINT in tags:
            entry["checkpoint"] = tags[TAG_CHECKPOINT]
        if TAG_ERROR in tags:
            entry["error"] = tags[TAG_ERROR]
        entries.append(entry)
    seen = {e["setting"] for e in entries}
    if spec.search is None:  # a grid point whose trial never opened a run
        for label, setting in spec.settings():
            if label not in seen:
                entries.append(
                    {
                        "rule": setting.rule.name,
                        "setting": label,
                        "run_id": None,
                        "status": RunStatus.FAILED.value,
                        "metrics": {},
                        "error": "the trial did not start",
                        "_order": (order[label], 0),
                    }
                )
    entries.sort(key=lambda e: e.pop("_order"))
    return entries


def best_per_rule(spec: ExperimentSpec, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rule, the trial with the best ``search.metric`` (without a search, the task's
    headline metric from ``trainers.catalogue``: ``val_acc`` or ``map``, max) among those
    that reported it: ``rule``, ``setting``, ``run_id``, ``metric``, ``value``, ``epochs``."""
    metric, mode = (spec.search.metric, spec.search.mode) if spec.search else headline(spec.task)
    sign = -1.0 if mode == "min" else 1.0
    best: dict[str, dict[str, Any]] = {}
    for entry in entries:
        value = (entry.get("metrics") or {}).get(metric)
        if value is None or math.isnan(value) or entry.get("status") == RunStatus.FAILED:
            continue
        rule = entry["rule"]
        if rule not in best or sign * value > sign * best[rule]["value"]:
            best[rule] = {
                "rule": rule,
                "setting": entry["setting"],
                "run_id": entry["run_id"],
                "metric": metric,
                "value": value,
                "epochs": int((entry.get("metrics") or {}).get("epoch", 0)),
            }
    return [best[r] for r in dict.fromkeys(e["rule"] for e in entries) if r in best]


def record_best(uri: str, parent: str, rows: list[dict[str, Any]]) -> None:
    """Put the best-per-rule rows on the parent run: tags ``bioprop.best.<rule>.run_id``,
    ``.setting`` and ``.<metric>`` (the value, as measured), and the table
    ``best_per_rule.json``."""
    if not rows:
        return
    from mlflow.entities import RunTag

    client = _client(uri)
    tags = []
    for row in rows:
        tags.append(RunTag(best_tag(row["rule"], "run_id"), str(row["run_id"])))
        tags.append(RunTag(best_tag(row["rule"], "setting"), row["setting"]))
        tags.append(RunTag(best_tag(row["rule"], row["metric"]), repr(row["value"])))
    client.log_batch(parent, tags=tags)
    columns = ("rule", "setting", "metric", "value", "epochs", "run_id")
    table = {c: [row[c] for row in rows] for c in columns}
    client.log_table(parent, data=table, artifact_file=BEST_TABLE)


def seed_groups(spec: ExperimentSpec) -> dict[str, str]:
    """Each setting's label (as :meth:`ExperimentSpec.settings` writes it) mapped to the
    label of its setting without the seed, when ``seed`` is swept (else empty): the
    settings that differ only by their seed share a group."""
    axes = spec.sweep_axes()
    if "seed" not in axes:
        return {}
    groups = {}
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo, strict=True))
        rule = point.get("rule.name", spec.rule.name)
        unseeded = {path: value for path, value in point.items() if path != "seed"}
        groups[setting_label(rule, point)] = setting_label(rule, unseeded)
    return groups


def over_seeds(spec: ExperimentSpec, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting without its seed (when ``seed`` is swept), the headline metric (or
    ``search.metric``) over the seeds that reported it: ``rule``, ``setting``, ``metric``,
    ``mean``, ``std`` (sample standard deviation, n - 1; 0 for one value), ``min``, ``max``,
    ``n`` (seeds that reported it) and ``seeds`` (seeds swept). A claim that one rule is
    ahead of another rests on these, not on the best single seed."""
    groups = seed_groups(spec)
    if not groups:
        return []
    metric = spec.search.metric if spec.search else headline(spec.task)[0]
    seeds = len(spec.sweep_axes()["seed"])
    values: dict[str, list[float]] = {}
    rules: dict[str, str] = {}
    for entry in entries:
        group = groups.get(entry.get("setting", ""))
        value = (entry.get("metrics") or {}).get(metric)
        if group is None or value is None or math.isnan(value):
            continue
        if entry.get("status") == RunStatus.FAILED:
            continue
        rules[group] = entry["rule"]
        values.setdefault(group, []).append(float(value))
    rows = []
    for group in dict.fromkeys(groups.values()):
        got = values.get(group)
        if not got:
            continue
        rows.append({
            "rule": rules[group], "setting": group, "metric": metric,
            "mean": statistics.fmean(got), "std": statistics.stdev(got) if len(got) > 1 else 0.0,
            "min": min(got), "max": max(got), "n": len(got), "seeds": seeds,
        })  # fmt: skip
    return rows


def record_over_seeds(uri: str, parent: str, rows: list[dict[str, Any]]) -> None:
    """The :func:`over_seeds` rows as the parent run's table ``over_seeds.json``."""
    if rows:
        table = {c: [row[c] for row in rows] for c in rows[0]}
        _client(uri).log_table(parent, data=table, artifact_file=SEEDS_TABLE)
