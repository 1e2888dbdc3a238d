"""End to end, the demo's path at its smallest: HTTP -> job store -> driver -> Ray Train DDP
(2 workers, gloo) -> DALI over JPEG files -> rule layers -> MLflow, read back with MlflowClient."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
import yaml
from mlflow import MlflowClient
from tiny_specs import TINY_DATA

from service.api.server import ServerThread
from service.client import Client
from service.core.settings import Settings

pytestmark = pytest.mark.slow


def demo_spec_at_smallest_size() -> dict:
    spec = yaml.safe_load(importlib.resources.files("service").joinpath("demo.yaml").read_text())
    spec["data"] = TINY_DATA
    spec["schedule"]["epochs"] = 2
    spec["batch_size"] = 16
    return spec


def test_demo_sweep_over_http_lands_in_mlflow(workdir, ray_cluster):
    settings = Settings(RUN_DIR=workdir / "bioprop-runs", RAY_ADDRESS=ray_cluster)
    spec = demo_spec_at_smallest_size()
    assert spec["rule"]["name"] == ["bp", "fa", "ss"] and spec["scale"]["workers"] == 2

    with ServerThread(settings) as server, Client(server.url) as client:
        job = client.submit(spec)
        assert job["state"] in ("PENDING", "RUNNING")
        job = client.wait(job["id"], timeout=480, poll=1.0)
        log_tail = client.logs(job["id"], tail=60)
        assert job["state"] == "SUCCEEDED", log_tail
        # Ray Train's placement-group cleaner warns once a second without a dashboard
        assert "Failed to query Ray Train Controller" not in client.logs(job["id"]), log_tail
        served = client.metrics(job["id"])

    mlflow = MlflowClient(settings.MLFLOW_URI)
    parent = mlflow.get_run(served["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["bioprop.job_id"] == job["id"]
    children = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    by_rule = {run.data.params["rule.name"]: run for run in children}
    assert sorted(by_rule) == ["bp", "fa", "ss"]
    for rule, run in by_rule.items():
        run_id = run.info.run_id
        assert run.info.status == "FINISHED"
        for name in ("train_loss", "val_acc", "align_mean_angle"):
            assert len(mlflow.get_metric_history(run_id, name)) == 2, (rule, name)
        # backprop's backward matrix is W itself; fa's is an independent random matrix
        angle = run.data.metrics["align_mean_angle"]
        assert {"bp": angle < 1e-3, "fa": angle > 45, "ss": 0 < angle < 90}[rule], (rule, angle)
        path = mlflow.download_artifacts(run_id, "checkpoints/checkpoint.pt", str(workdir))
        state = torch.load(path, weights_only=False)
        assert state["epoch"] == 1 and state["spec"]["rule"]["name"] == rule
    served_rules = {c["rule"]: c for c in served["children"]}
    assert served_rules["fa"]["metrics"]["val_acc"] == by_rule["fa"].data.metrics["val_acc"]
