"""A real sweep on a local Ray cluster: DDP workers, DALI over JPEG files, MLflow read back."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from trainers.launch import run_experiment
from trainers.spec import ExperimentSpec

pytestmark = pytest.mark.slow


def test_two_worker_sweep_logs_parent_children_metrics_and_checkpoints(workdir, rule_sweep):
    result, _ = rule_sweep  # bp, fa, ss: tiny conv net, 2 workers, 3 epochs (conftest)
    assert result["status"] == "FINISHED", result

    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = {c["rule"]: c["run_id"] for c in result["children"]}
    summary = {c["rule"]: c["metrics"] for c in result["children"]}
    assert summary["bp"]["val_acc"] == client.get_run(children["bp"]).data.metrics["val_acc"]
    assert "align_mean_angle" in summary["fa"] and "angle/block1.conv" not in summary["fa"]
    assert set(children) == {"bp", "fa", "ss"}
    for rule, run_id in children.items():
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["rule.name"] == rule
        losses = [m.value for m in client.get_metric_history(run_id, "train_loss")]
        assert len(losses) == 3 and losses[-1] < losses[0], losses
        angle = run.data.metrics["align_mean_angle"]
        assert angle < 1e-3 if rule == "bp" else angle > 10.0
        # the rule's weight gradient vs exact BP's on the fixed probe batch
        grad_angles = client.get_metric_history(run_id, "galign_mean_grad_angle")
        if rule == "fa":
            assert len(grad_angles) == 3 and all(0 < m.value < 90 for m in grad_angles)
        assert run.data.metrics["ddp_nodes"] == 1
        assert "curves.png" in [a.path for a in client.list_artifacts(run_id)]
        artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
        assert artifacts == ["checkpoints/checkpoint.pt"]
        local = client.download_artifacts(run_id, "checkpoints/checkpoint.pt", str(workdir))
        state = torch.load(local, weights_only=False)
        assert state["epoch"] == 2 and state["spec"]["rule"]["name"] == rule


def test_job_id_with_filter_syntax_is_refused(workdir):
    with pytest.raises(ValueError, match="job_id"):
        run_experiment(ExperimentSpec(), job_id="x' OR 1=1")
