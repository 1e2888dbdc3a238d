"""A 1-worker setting trained in its Tune trial's process (``trainers/in_trial.py``): its
checkpoint folders (local and on an S3-compatible store), and a restart after a failure
inside the loop that ends exactly like a run never interrupted.

The loop runs here, in the test's process, through the same :func:`fit_in_trial` a trial
calls (outside a Tune session, ``ray.tune.report`` only warns), against a real MLflow store
and the session's Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from trainers import worker
from trainers.in_trial import COMPLETE, CheckpointStore, fit_in_trial
from trainers.spec import ExperimentSpec
from trainers.trainer import worker_config


def _folder(tmp_path: Path, epoch: int) -> str:
    """A local checkpoint folder as the worker writes one (its file holds the epoch)."""
    folder = tmp_path / f"local-{epoch}"
    folder.mkdir()
    torch.save({"epoch": epoch}, folder / "checkpoint.pt")
    return str(folder)


def _epoch_of(checkpoint) -> int:
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / "checkpoint.pt", weights_only=False)["epoch"]


def _check_store(store: CheckpointStore, tmp_path: Path) -> None:
    assert store.latest() is None
    for epoch in range(4):
        store.save(_folder(tmp_path, epoch), epoch)
    assert [e for e, _ in store.complete()] == [1, 2, 3]  # keep=3: the oldest dropped
    assert _epoch_of(store.latest()) == 3
    # a copy interrupted before its marker: ignored, the newest whole one is resumed from
    half = f"{store.root}/checkpoint_000004"
    store.fs.create_dir(half)
    with store.fs.open_output_stream(f"{half}/checkpoint.pt") as out:
        out.write(b"trunc")
    assert _epoch_of(store.latest()) == 3
    store.save(_folder(tmp_path, 4), 4)  # the same epoch trained again replaces it
    assert _epoch_of(store.latest()) == 4
    assert store.fs.get_file_info(f"{half}/{COMPLETE}").size == 0


def test_checkpoint_folders_keep_the_newest_whole_ones(tmp_path):
    _check_store(CheckpointStore.open(str(tmp_path / "storage"), "setting", keep=3), tmp_path)


def test_checkpoint_folders_on_an_s3_compatible_store(tmp_path, s3):
    s3.create_bucket(Bucket="in-trial")  # its own: other tests expect `ckpt` empty
    store = CheckpointStore.open("s3://in-trial/runs", "setting", keep=3)
    _check_store(store, tmp_path)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="in-trial", Prefix="runs/")["Contents"]}
    assert "runs/setting/checkpoint_000004/checkpoint.pt" in keys
    assert not any(k.startswith("runs/setting/checkpoint_000000/") for k in keys)


DIGITS = {
    "name": "in-trial",
    "model": "mlp",
    "data": {"kind": "digits", "image_size": 8},
    "rule": {"name": "kp"},  # plastic feedback: its state must resume too
    "optim": {"lr": 0.05},
    "batch_size": 64,
    "schedule": {"epochs": 3, "step_every": 2},
    "scale": {"workers": 1},
    "checkpoint": {"every_epochs": 1, "min_interval_s": 0},
    "max_failures": 1,
}


def _fit(tmp_path: Path, name: str) -> tuple[dict, str, str]:
    """Train ``DIGITS`` in this process; the final checkpoint's state, the run and store."""
    spec = ExperimentSpec.model_validate({**DIGITS, "storage_path": str(tmp_path / "ckpt")})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("in-trial") or client.get_experiment(
        client.create_experiment("in-trial")
    )
    run_id = client.create_run(experiment.experiment_id, run_name=name).info.run_id
    config = worker_config(spec, run_id=run_id, uri=uri, label=name)
    checkpoint = fit_in_trial(config, spec, name)
    with checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, "checkpoint.pt"), weights_only=False)
    return state, run_id, uri


@pytest.mark.filterwarnings("ignore::UserWarning")  # ray.tune.report outside a Tune session
def test_a_failure_inside_the_loop_restarts_from_the_checkpoint_exactly(
    tmp_path, ray_cluster, monkeypatch
):
    whole, _, _ = _fit(tmp_path, "whole")

    # a fault in the middle of epoch 2 (epoch 1 is checkpointed), once
    steps = {"n": 0, "raised": False}
    after_step = worker.rules.after_step

    def fails_once(model):
        steps["n"] += 1
        if steps["n"] == 30 and not steps["raised"]:  # 23 steps per epoch: inside epoch 2
            steps["raised"] = True
            raise RuntimeError("injected fault")
        after_step(model)

    monkeypatch.setattr(worker.rules, "after_step", fails_once)
    again, run_id, uri = _fit(tmp_path, "restarted")

    assert steps["raised"]
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "resumed_from_epoch")] == [
        (1, 1.0)
    ]
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2, 3]
    assert whole["epoch"] == again["epoch"] == 2
    assert any("feedback" in key for key in whole["model"])
    for key in whole["model"]:
        torch.testing.assert_close(whole["model"][key], again["model"][key], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_failures_beyond_max_failures_end_the_setting(tmp_path, ray_cluster, monkeypatch):
    def always(model):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(worker.rules, "after_step", always)
    with pytest.raises(RuntimeError, match="injected fault"):
        _fit(tmp_path, "broken")
