"""Sweeps and searches as one Ray Tune experiment on a real 2-CPU local Ray cluster:
trials side by side, ASHA early stopping, the best trial per rule on the parent run."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from trainers.launch import run_experiment
from trainers.spec import ExperimentSpec

pytestmark = pytest.mark.slow

# scikit-learn's digits through the MLP: epochs of a fraction of a second
DIGITS = {
    "model": "mlp",
    "data": {"kind": "digits", "image_size": 8},
    "batch_size": 64,
    "optim": {"lr": 0.05},
    "scale": {"workers": 1},
}


def test_four_setting_sweep_runs_two_trials_at_once(workdir, ray_cluster):
    spec = ExperimentSpec.model_validate(
        {
            **DIGITS,
            "name": "side-by-side",
            "rule": {"name": ["bp", "fa"]},
            "seed": [0, 1],
            "schedule": {"epochs": 2},
        }
    )
    result = run_experiment(spec, job_id="side-by-side")
    assert result["status"] == "FINISHED", result
    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = [client.get_run(c["run_id"]) for c in result["children"]]
    labels = [c.data.tags["bioprop.setting"] for c in children]
    assert labels == ["bp seed=0", "bp seed=1", "fa seed=0", "fa seed=1"]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.metrics["epoch"] == 2
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
            "checkpoints/checkpoint.pt"
        ]
    # the cluster holds two 1-worker settings: at some moment two child runs were open at once
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most == 2, spans

    # the parent run names the best setting per rule, with its metric and child run
    best = {row["rule"]: row for row in result["best"]}
    assert set(best) == {"bp", "fa"}
    for rule, row in best.items():
        mine = [r for r in children if r.data.tags["bioprop.rule"] == rule]
        top = max(mine, key=lambda r: r.data.metrics["val_acc"])
        assert row["value"] == top.data.metrics["val_acc"]
        assert parent.data.tags[f"bioprop.best.{rule}.run_id"] == row["run_id"]
        assert parent.data.metrics[f"best_val_acc.{rule}"] == row["value"]
    table = client.download_artifacts(parent.info.run_id, "best_per_rule.json", str(workdir))
    stored = json.loads(open(table).read())
    assert stored["columns"][0] == "rule" and len(stored["data"]) == 2
