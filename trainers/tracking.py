"""MLflow tracking: where runs live, how a job's runs are laid out, and how to read them back.

Layout: an experiment (``spec.tracking.experiment``) holds, per job, one parent run
(tag ``bioprop.role=parent``) and one child run per sweep setting (``bioprop.role=child``,
``mlflow.parentRunId``); a single-rule experiment has the parent and one child too, so every
job reads back the same way. Every run carries ``bioprop.job_id`` when the job has one.
Params are the flattened resolved spec. All access goes through ``mlflow.MlflowClient``.

Metric names (:func:`mlflow_metrics`): whole-model metrics keep their flat names (``val_acc``,
``align_mean_angle``, ``galign_mean_grad_angle``); per-layer ones are ``<stat>/<layer>`` with
the layer's module path (``angle/layer1.0.conv1``, ``grad_angle/fc``), so MLflow's chart view
puts each statistic in its own section, one chart per layer. The default per-layer set is
:data:`LAYER_STATS` (4 keys per layer), logged as metrics only for nets of up to
``tracking.layer_metrics_max_layers`` rule layers (8 by default: the demo's conv net has 4,
ResNet-18 21); the weight distribution statistics (:data:`WEIGHT_STATS`) only with
``tracking.weight_stats``. Every statistic of every layer, whatever is a metric, is a row of
the per-epoch table artifact ``layer_stats.json`` (``epoch``, ``layer``, one column per
statistic). At the last epoch a run also logs ``angle_by_depth``, whose step is the layer's
depth (1 = the rule layer nearest the input, in the order of the tag ``bioprop.layers``) and
whose value is that layer's angle, so MLflow's chart view draws the angle against depth
(the papers' figure) per run. Values are logged as measured: bp's angle of about 1e-6
degrees is float round-off, not misalignment.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunStatus

from trainers.catalogue import TASKS
from trainers.contracts import TAG_JOB, TAG_LAYERS, TAG_NOTE, TAG_ROLE, TAG_RULE, TAG_SETTING
from trainers.spec import ExperimentSpec

__all__ = [
    "ANGLE_BY_DEPTH",
    "LAYER_STATS_TABLE",
    "LAYER_STATS",
    "WEIGHT_STATS",
    "default_tracking_uri",
    "find_job_runs",
    "finish_run",
    "job_summary",
    "layer_order",
    "log_curves",
    "log_epoch",
    "log_metrics",
    "log_metrics_of",
    "metric_name",
    "mlflow_metrics",
    "model_metrics",
    "reopen_run",
    "start_child",
    "start_parent",
]


#: Per-layer statistics logged as metrics by default: what a reader compares between rules.
LAYER_STATS = ("angle", "norm_ratio", "sign_concordance", "grad_angle")
#: Weight distribution statistics: metrics only with ``tracking.weight_stats``.
WEIGHT_STATS = ("kurtosis", "mean", "std")
LAYER_STATS_TABLE = "layer_stats.json"
#: Metric whose step is the layer's depth (1-based, model order) and value its final angle.
ANGLE_BY_DEPTH = "angle_by_depth"
# the loop's names: align_<layer>.<stat> (trainers.metrics.alignment), galign_<layer>.grad_angle
_LAYER_KEY = re.compile(
    r"^g?align_(?P<layer>.+)\.(?P<stat>" + "|".join((*LAYER_STATS, *WEIGHT_STATS)) + r")$"
)
_BAD_CHARS = re.compile(r"[^\w.\- :/]")


def metric_name(name: str) -> str:
    """``name`` made a valid MLflow key: characters MLflow refuses become ``_``, and empty
    or ``..`` path segments are dropped (MLflow keys are normalized posix paths)."""
    parts = [p for p in _BAD_CHARS.sub("_", name).split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def mlflow_metrics(
    metrics: dict[str, float], *, weight_stats: bool = False, max_layers: int | None = None
) -> tuple[dict[str, float], list[dict[str, Any]], list[str]]:
    """Split a loop's metrics into what MLflow logs: ``(metrics, layer_rows, layers)``.

    ``align_<layer>.<stat>`` and ``galign_<layer>.grad_angle`` become ``<stat>/<layer>``
    metrics, the :data:`WEIGHT_STATS` (and ``align_mean_kurtosis``) only with
    ``weight_stats``, and none when the net has more than ``max_layers`` layers (None: no
    limit). ``layer_rows`` holds every statistic, one ``{"layer", <stat>: value, ...}`` per
    layer; ``layers`` lists the layers in the order met (model order, since
    :func:`trainers.metrics.alignment` walks ``named_modules``). Other keys pass unchanged.
    """
    out: dict[str, float] = {}
    per_layer: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        found = _LAYER_KEY.match(key)
        if found is None:
            if key == "align_mean_kurtosis" and not weight_stats:
                continue
            out[metric_name(key)] = value
            continue
        layer, stat = found["layer"], found["stat"]
        rows.setdefault(layer, {"layer": layer})[stat] = value
        if stat not in WEIGHT_STATS or weight_stats:
            per_layer[metric_name(f"{stat}/{layer}")] = value
    if max_layers is None or len(rows) <= max_layers:
        out.update(per_layer)
    return out, list(rows.values()), list(rows)


def model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The whole-model metrics of a run (no per-layer ``<stat>/<layer>``, no ``system/``)."""
    return {k: v for k, v in metrics.items() if "/" not in k}


def layer_order(run: Run) -> list[str]:
    """The run's rule layers in model order (tag ``bioprop.layers``); [] before epoch 1."""
    return json.loads(run.data.tags.get(TAG_LAYERS, "[]"))


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


SPEC_ARTIFACT = "spec.yaml"


def start_parent(spec: ExperimentSpec, *, uri: str, job_id: str | None = None) -> str:
    """Create the job's parent run; returns its id. It carries the source and user tags, the
    dataset input, the spec as artifact ``spec.yaml`` (what reproduces the job) and a note
    that :func:`trainers.summary.write_summary` replaces with the sweep's summary."""
    import tempfile

    import yaml

    from trainers.run_context import dataset_input, source_tags

    client = MlflowClient(uri)
    labels = [label for label, _ in spec.settings()]
    tags = {
        **source_tags(),
        TAG_ROLE: "parent",
        "mlflow.runName": spec.name,
        TAG_NOTE: f"### {spec.name}\n\nSweep of {len(labels)} setting(s): "
        + ", ".join(f"`{label}`" for label in labels)
        + ". The summary appears here as settings finish.\n",
    }
    if job_id:
        tags[TAG_JOB] = job_id
    run = client.create_run(_experiment_id(client, spec.tracking.experiment, uri), tags=tags)
    run_id = run.info.run_id
    _log_params(client, run_id, spec.flat_params())
    client.log_inputs(run_id, datasets=[dataset_input(spec.data)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SPEC_ARTIFACT
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        client.log_artifact(run_id, str(path))
    return run_id


def start_child(
    spec: ExperimentSpec,
    *,
    uri: str,
    parent_run_id: str,
    job_id: str | None = None,
    setting: str | None = None,
) -> str:
    """Create one child run for a resolved spec under ``parent_run_id``; ``setting`` labels its
    point of the sweep grid (default: its rule). The run carries a note describing the
    setting (:func:`trainers.run_context.child_note`), the dataset input, source and user."""
    from trainers.run_context import child_note, dataset_input, source_tags, split_sizes

    client = MlflowClient(uri)
    rule = spec.rule.name
    setting = setting or rule
    sizes = split_sizes(spec.data)
    tags = {
        **source_tags(),
        TAG_NOTE: child_note(spec, setting, sizes),
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
    client.log_inputs(run.info.run_id, datasets=[dataset_input(spec.data, sizes)])
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], *, step: int) -> None:
    """Log a dict of scalar metrics at ``step`` in batch calls, named by :func:`mlflow_metrics`
    (every statistic kept)."""
    log_metrics_of(uri, run_id, metrics, step=step)


def log_metrics_of(
    uri: str, run_id: str, metrics: dict[str, float], *, step: int, max_layers: int | None = None
) -> None:
    """:func:`log_metrics` with per-layer keys only for nets of up to ``max_layers`` layers."""
    named = mlflow_metrics(metrics, weight_stats=True, max_layers=max_layers)[0]
    _log_batch(MlflowClient(uri), run_id, named, step)


def _log_batch(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i : i + 500])


def log_epoch(
    uri: str,
    run_id: str,
    metrics: dict[str, float],
    *,
    step: int,
    weight_stats: bool = False,
    max_layers: int | None = 8,
    final: bool = False,
) -> None:
    """Log one epoch's metrics (rank 0): the MLflow names of :func:`mlflow_metrics`, the
    layer order as tag ``bioprop.layers``, every layer's statistics as rows (``epoch``,
    ``layer``, one column per statistic) appended to the table artifact
    ``layer_stats.json`` and, at the ``final`` epoch, ``angle_by_depth`` (step = depth)."""
    from mlflow.entities import RunTag

    client = MlflowClient(uri)
    named, rows, layers = mlflow_metrics(metrics, weight_stats=weight_stats, max_layers=max_layers)
    _log_batch(client, run_id, named, step)
    if layers:
        client.log_batch(run_id, tags=[RunTag(TAG_LAYERS, json.dumps(layers)[:8000])])
    if final:
        now = int(time.time() * 1000)
        depth = [
            Metric(ANGLE_BY_DEPTH, float(row["angle"]), now, i)
            for i, row in enumerate(rows, start=1)
            if "angle" in row
        ]
        for i in range(0, len(depth), 500):
            client.log_batch(run_id, metrics=depth[i : i + 500])
    if rows:
        import pandas as pd

        table = pd.DataFrame([{"epoch": step, **row} for row in rows])
        client.log_table(run_id, table, LAYER_STATS_TABLE)


def angle_limits(values: list[float]) -> tuple[float, float]:
    """A fixed y-range for angles in degrees: 0-90, or 0-180 when a value passes 90. Never
    autoscaled, so bp's float-noise angle (about 1e-6 degrees) draws as the flat 0 it is."""
    return (0.0, 180.0) if any(v > 90 for v in values) else (0.0, 90.0)


def log_curves(uri: str, run_id: str) -> None:
    """Plot the run's loss, accuracy and alignment-angle curves per epoch; log ``curves.png``.

    Accuracy is drawn on 0-1 and the angle on :func:`angle_limits`, not autoscaled."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    curves = TASKS.get(run.data.params.get("task", "classify"), TASKS["classify"]).curves
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4))
    for ax, names in zip(axes, curves, strict=True):
        for name in names:
            points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    axes[1].set_ylim(0, 1)
    angles = [v for line in axes[-1].lines for v in line.get_ydata()]
    axes[-1].set_ylim(*angle_limits(angles))
    axes[-1].set_ylabel("mean angle W vs backward matrix (degrees)")
    fig.suptitle(run.data.tags.get("mlflow.runName", run_id))
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
