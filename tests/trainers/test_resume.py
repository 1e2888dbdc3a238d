"""Checkpoint/resume and worker fault tolerance on a real local Ray cluster (CPU)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
import torch
from mlflow import MlflowClient
from tiny_specs import tiny_spec

from trainers.launch import run_experiment
from trainers.spec import ExperimentSpec

pytestmark = pytest.mark.slow

BASE = tiny_spec(
    name="resume",
    rule={"name": "kp"},  # plastic feedback: its state must resume too
    optim={"lr": 0.05},
    schedule={"epochs": 3, "step_every": 2},
)


def _final_state(result: dict) -> dict:
    (child,) = result["children"]
    path = os.path.join(child["checkpoint"], "checkpoint.pt")
    return torch.load(path, weights_only=False)


def _history(uri: str, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, name)]


def test_stopped_then_resumed_run_ends_exactly_like_an_uninterrupted_one(workdir, ray_cluster):
    spec = ExperimentSpec.model_validate({**BASE, "scale": {"workers": 1}})
    whole = run_experiment(spec, job_id="whole")

    short = spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"epochs": 1})})
    first = run_experiment(short, job_id="interrupted")  # stops after epoch 1
    assert _final_state(first)["epoch"] == 0
    resumed = run_experiment(spec, job_id="interrupted")  # same job: picks up at epoch 2
    uri = resumed["tracking_uri"]
    run_id = resumed["children"][0]["run_id"]
    # the resumed job keeps logging into its own MLflow runs
    assert resumed["parent_run_id"] == first["parent_run_id"]
    assert run_id == first["children"][0]["run_id"]
    assert _history(uri, run_id, "resumed_from_epoch") == [(1, 1.0)]
    assert [step for step, _ in _history(uri, run_id, "train_loss")] == [1, 2, 3]
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    again = run_experiment(spec, job_id="interrupted")  # nothing left to do
    assert again["children"][0]["skipped"] and again["status"] == "FINISHED"
    assert len(_history(uri, run_id, "train_loss")) == 3

    a, b = _final_state(whole), _final_state(resumed)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    assert any("feedback" in key for key in a["model"])
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6, msg=key)
    whole_loss = _history(uri, whole["children"][0]["run_id"], "val_loss")[-1]
    resumed_loss = _history(uri, run_id, "val_loss")[-1]
    assert whole_loss[0] == resumed_loss[0] == 3
    assert abs(whole_loss[1] - resumed_loss[1]) < 1e-6


def _train_workers() -> list[psutil.Process]:
    """This session's Ray Train workers: descendants of this process (the local cluster's
    raylet is its child), never another session's on a shared machine."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone, or a zombie, since the listing
            continue
    return found


# 2 DDP workers, a checkpoint every 2 epochs however fast they are
KILLED = {
    **BASE,
    "schedule": {"epochs": 6, "step_every": 2},
    "scale": {"workers": 2},
    "max_failures": 2,
    "checkpoint": {"every_epochs": 2, "min_interval_s": 0},
}


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory) -> dict:
    """``KILLED`` trained without a fault: what the killed run must end with."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("uninterrupted"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        return run_experiment(ExperimentSpec.model_validate(KILLED), job_id="whole-ddp")


def test_killed_worker_is_restarted_and_run_completes_from_checkpoint(
    workdir, ray_cluster, uninterrupted
):
    # a checkpoint every 2 epochs and the kill once epoch 3 is logged, between two
    # checkpoints: the restarted group trains again what it logged past its checkpoint,
    # MLflow keeps one point per epoch, and the run ends exactly as one never killed
    spec = ExperimentSpec.model_validate(KILLED)
    uri = f"sqlite:///{workdir / 'bioprop-runs' / 'mlflow.db'}"
    killed: list[int] = []

    def kill_after_second_epoch() -> None:
        client, deadline = None, time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            time.sleep(0.3)
            try:
                client = client or MlflowClient(uri)
                runs = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()],
                    filter_string="tags.`bioprop.role` = 'child'",
                )
            except Exception:
                continue
            if runs and runs[0].data.metrics.get("epoch", 0) >= 3:
                victim = _train_workers()[-1]
                victim.send_signal(signal.SIGKILL)
                killed.append(victim.pid)

    watcher = threading.Thread(target=kill_after_second_epoch, daemon=True)
    watcher.start()
    result = run_experiment(spec, job_id="ft")
    watcher.join(timeout=5)

    assert killed, "the run finished before a worker could be killed"
    assert result["status"] == "FINISHED", result
    run_id = result["children"][0]["run_id"]
    resumed = _history(uri, run_id, "resumed_from_epoch")
    # restarted from a saved checkpoint (the controller may not have registered the newest one
    # when the kill landed), never from scratch
    assert len(resumed) == 1 and resumed[0][1] in (2, 4)
    for name in ("epoch", "train_loss", "val_acc"):
        steps = sorted(step for step, _ in _history(uri, run_id, name))
        assert steps == list(range(1, 7)), (name, steps)  # one point per epoch
    tags = MlflowClient(uri).get_run(run_id).data.tags
    retrained = [int(e) for e in tags.get("bioprop.retrained_epochs", "").split(",") if e]
    if resumed[0][1] == 2:  # epoch 3 was logged before the kill, then trained again
        assert retrained and retrained[0] == 3, tags
    a, b = _final_state(uninterrupted), _final_state(result)
    assert a["epoch"] == b["epoch"] == 5
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6, msg=key)
    whole_uri = uninterrupted["tracking_uri"]
    whole_loss = _history(whole_uri, uninterrupted["children"][0]["run_id"], "val_loss")[-1]
    assert _history(uri, run_id, "val_loss")[-1] == pytest.approx(whole_loss, abs=1e-6)
