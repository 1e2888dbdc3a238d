"""MLflow tracking: where runs live, how a job's runs are laid out, and how to read them back.

Layout: an experiment (``spec.tracking.experiment``) holds, per job, one parent run
(tag ``bioprop.role=parent``) and one child run per sweep setting (``bioprop.role=child``,
``mlflow.parentRunId``); a single-rule experiment has the parent and one child too, so every
job reads back the same way. Every run carries ``bioprop.job_id`` when the job has one.
Params are the flattened resolved spec. All access goes through ``mlflow.MlflowClient``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunStatus

from trainers.spec import ExperimentSpec

__all__ = [
    "default_tracking_uri",
    "find_job_runs",
    "finish_run",
    "log_curves",
    "job_summary",
    "log_metrics",
    "reopen_run",
    "start_child",
    "start_parent",
]

TAG_JOB = "bioprop.job_id"
TAG_ROLE = "bioprop.role"
TAG_RULE = "bioprop.rule"
TAG_SETTING = "bioprop.setting"


def default_tracking_uri(spec_uri: str | None = None) -> str:
    """``spec.tracking.uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///./bioprop-runs/mlflow.db``."""
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = Path.cwd() / "bioprop-runs"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # keep artifacts beside the sqlite file instead of MLflow's cwd-relative ./mlruns
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another driver created it between the two calls
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def start_parent(spec: ExperimentSpec, *, uri: str, job_id: str | None = None) -> str:
    """Create the job's parent run; returns its id."""
    client = MlflowClient(uri)
    tags = {TAG_ROLE: "parent", "mlflow.runName": spec.name}
    if job_id:
        tags[TAG_JOB] = job_id
    run = client.create_run(_experiment_id(client, spec.tracking.experiment, uri), tags=tags)
    _log_params(client, run.info.run_id, spec.flat_params())
    return run.info.run_id


def start_child(
    spec: ExperimentSpec,
    *,
    uri: str,
    parent_run_id: str,
    job_id: str | None = None,
    setting: str | None = None,
) -> str:
    """Create one child run for a resolved spec under ``parent_run_id``; ``setting`` labels its
    point of the sweep grid (default: its rule)."""
    client = MlflowClient(uri)
    rule = spec.rule.name
    setting = setting or rule
    tags = {
        TAG_ROLE: "child",
        TAG_RULE: rule,
        TAG_SETTING: setting,
        "mlflow.parentRunId": parent_run_id,
        "mlflow.runName": f"{spec.name} {setting}",
    }
    if job_id:
        tags[TAG_JOB] = job_id
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, tags=tags)
    _log_params(client, run.info.run_id, spec.flat_params())
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], *, step: int) -> None:
    """Log a dict of scalar metrics at ``step`` in one batch call."""
    import time

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    client = MlflowClient(uri)
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i : i + 500])


CURVES = (("train_loss", "val_loss"), ("train_acc", "val_acc", "map"), ("align_mean_angle",))


def log_curves(uri: str, run_id: str) -> None:
    """Plot the run's loss, accuracy and alignment-angle curves per epoch; log ``curves.png``."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient(uri)
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    for ax, names in zip(axes, CURVES, strict=True):
        for name in names:
            points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    axes[-1].set_ylabel("degrees")
    fig.suptitle(client.get_run(run_id).data.tags.get("mlflow.runName", run_id))
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "curves.png"
        fig.savefig(path, dpi=100)
        client.log_artifact(run_id, str(path))
    plt.close(fig)


def finish_run(uri: str, run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED (idempotent)."""
    RunStatus.from_string(status)  # refuse a typo early
    MlflowClient(uri).set_terminated(run_id, status=status)


def find_job_runs(job_id: str, uri: str) -> tuple[Run | None, list[Run]]:
    """The job's parent run (None when it has none yet) and its child runs, oldest first."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None, []
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{TAG_JOB}` = '{job_id}'", max_results=1000
    )
    parent = next((r for r in runs if r.data.tags.get(TAG_ROLE) == "parent"), None)
    children = sorted(
        (r for r in runs if r.data.tags.get(TAG_ROLE) == "child"), key=lambda r: r.info.start_time
    )
    return parent, children


def reopen_run(uri: str, run_id: str) -> None:
    """Mark an earlier run RUNNING again: a resumed job keeps logging into its own runs."""
    MlflowClient(uri).update_run(run_id, status="RUNNING")


def job_summary(job_id: str, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """What MLflow holds for a job: its parent run and, per child, rule, status and latest metrics.

    Returns None when the job has no runs yet.
    """
    parent, children = find_job_runs(job_id, default_tracking_uri(tracking_uri))
    if parent is None:
        return None
    return {
        "parent_run_id": parent.info.run_id,
        "experiment_id": parent.info.experiment_id,
        "status": parent.info.status,
        "children": [
            {
                "rule": r.data.tags.get(TAG_RULE),
                "setting": r.data.tags.get(TAG_SETTING) or r.data.tags.get(TAG_RULE),
                "run_id": r.info.run_id,
                "status": r.info.status,
                "metrics": dict(r.data.metrics),
            }
            for r in children
        ],
    }
