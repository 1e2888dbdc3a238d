"""MLflow layout: parent and child runs in a real sqlite store, read back with MlflowClient."""

from __future__ import annotations

from mlflow import MlflowClient

from trainers.spec import ExperimentSpec
from trainers.tracking import (
    default_tracking_uri,
    finish_run,
    job_summary,
    log_curves,
    log_metrics,
    start_child,
    start_parent,
)


def test_parent_children_metrics_and_summary(workdir):
    uri = default_tracking_uri()
    assert uri == f"sqlite:///{workdir / 'bioprop-runs' / 'mlflow.db'}"
    spec = ExperimentSpec.model_validate({"name": "t", "rule": {"name": ["bp", "fa"]}})
    parent = start_parent(spec, uri=uri, job_id="job-1")
    children = [
        start_child(s, uri=uri, parent_run_id=parent, job_id="job-1") for s in spec.expand()
    ]
    log_metrics(uri, children[1], {"val_acc": 0.5, "epoch": 1}, step=1)
    log_metrics(uri, children[1], {"val_acc": 0.75, "epoch": 2}, step=2)
    finish_run(uri, children[0], "FINISHED")

    client = MlflowClient(uri)
    run = client.get_run(children[1])
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["rule.name"] == "fa" and run.data.params["optim.lr"] == "0.05"
    history = client.get_metric_history(children[1], "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert client.get_run(children[0]).info.status == "FINISHED"
    artifact_uri = client.get_run(parent).info.artifact_uri
    assert str(workdir / "bioprop-runs" / "mlartifacts") in artifact_uri

    summary = job_summary("job-1", uri)
    assert summary["parent_run_id"] == parent
    assert [c["rule"] for c in summary["children"]] == ["bp", "fa"]
    assert summary["children"][1]["metrics"]["val_acc"] == 0.75
    assert job_summary("no-such-job", uri) is None


def test_curves_png_is_logged_with_each_metric(workdir):
    from PIL import Image

    uri = default_tracking_uri()
    spec = ExperimentSpec()
    parent = start_parent(spec, uri=uri)
    child = start_child(spec, uri=uri, parent_run_id=parent)
    for epoch in (1, 2, 3):
        log_metrics(
            uri,
            child,
            {"train_loss": 2.0 / epoch, "val_acc": 0.3 * epoch, "align_mean_angle": 80 - 5 * epoch},
            step=epoch,
        )
    log_curves(uri, child)
    client = MlflowClient(uri)
    assert [a.path for a in client.list_artifacts(child)] == ["curves.png"]
    image = Image.open(client.download_artifacts(child, "curves.png", str(workdir)))
    assert image.format == "PNG" and image.width > image.height > 200
