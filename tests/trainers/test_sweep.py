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
        assert float(parent.data.tags[f"bioprop.best.{rule}.val_acc"]) == row["value"]
    assert parent.data.metrics == {}  # nothing drawn beside the children in the chart view
    table = client.download_artifacts(parent.info.run_id, "best_per_rule.json", str(workdir))
    stored = json.loads(open(table).read())
    assert stored["columns"][0] == "rule" and len(stored["data"]) == 2

    # per rule over its two seeds: mean and sample std of the children's val_acc
    for row in result["over_seeds"]:
        got = [
            r.data.metrics["val_acc"]
            for r in children
            if r.data.tags["bioprop.rule"] == row["rule"]
        ]
        mean = sum(got) / 2
        assert row["setting"] == row["rule"] and (row["n"], row["seeds"]) == (2, 2)
        assert row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(((got[0] - mean) ** 2 + (got[1] - mean) ** 2) ** 0.5)
    assert [row["rule"] for row in result["over_seeds"]] == ["bp", "fa"]
    table = client.download_artifacts(parent.info.run_id, "over_seeds.json", str(workdir))
    assert len(json.loads(open(table).read())["data"]) == 2


@pytest.fixture
def another_ray_on_this_host():
    """A second Ray instance on this machine (``ray start --head``, its own temp folder and
    session), as when two ``bioprop run`` share a workstation; stopped with its session."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from service.api.server import free_port

    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="bray", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    ray_cli = str(Path(sys.executable).parent / "ray")
    cmd = [ray_cli, "start", "--head", "--block", "--port", str(port), "--num-cpus", "0",
           "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]  # fmt: skip
    log = temp / "start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"ray start took over 120 s: {log}"
            time.sleep(0.5)
        yield port
    finally:
        from service.backends.processes import session_members

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # `ray start --block` can take 30 s over SIGTERM: this instance is disposable
        for pid in session_members(proc.pid):  # GCS, raylet, agents: all of its session
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def test_search_stops_an_absurd_learning_rate_at_the_grace_period(
    workdir, ray_cluster, another_ray_on_this_host, s3
):
    """With a second Ray instance on the host, where Ray's own lookup of "the" local
    cluster fails: the stopped trial's CPUs are still freed (``init_local_ray``). On object
    storage (an S3 endpoint): the stopped trial's last checkpoint, which Tune reports
    without its ``s3://``, is found and logged, and both runs name theirs by full URI."""
    spec = ExperimentSpec.model_validate(
        {
            **DIGITS,
            "name": "asha",
            "storage_path": "s3://ckpt/asha",
            "rule": {"name": "bp"},
            "schedule": {"epochs": 5},
            "sweep": {"max_concurrent": 1},  # the sane rate reaches epoch 1 first
            "checkpoint": {"min_interval_s": 0},  # the stopped trial has one to log
            "search": {
                "metric": "val_acc",
                "mode": "max",
                "num_samples": 1,
                "space": {"optim.lr": {"grid": [0.05, 50.0]}},
                "asha": {"grace_period": 1, "reduction_factor": 2},
            },
        }
    )
    result = run_experiment(spec, job_id="asha")
    assert result["status"] == "FINISHED", result
    client = MlflowClient(result["tracking_uri"])
    runs = {float(c.data.params["optim.lr"]): c for c in map(client.get_run, _ids(result))}
    assert sorted(runs) == [0.05, 50.0]
    sane, absurd = runs[0.05], runs[50.0]
    assert absurd.data.tags["bioprop.stopped_early"] == "true"
    assert absurd.data.tags["bioprop.stopped_at_epoch"] == "1"
    assert absurd.info.status == "FINISHED"
    assert absurd.data.metrics["epoch"] < 5  # Tune ended it before its last epoch
    assert "bioprop.stopped_early" not in sane.data.tags
    assert sane.data.metrics["epoch"] == 5
    for run in (sane, absurd):
        assert "bioprop.bookkeeping_error" not in run.data.tags, run.data.tags
        assert run.data.tags["bioprop.checkpoint"].startswith("s3://ckpt/asha/")
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
            "checkpoints/checkpoint.pt"
        ]
    (best,) = result["best"]
    assert best["run_id"] == sane.info.run_id and best["setting"] == "bp lr=0.05"
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["bioprop.best.bp.setting"] == "bp lr=0.05"
    _assert_cpus_released()


def _assert_cpus_released(timeout: float = 60) -> None:
    """Every CPU of the cluster is free again: a trial Tune stopped early (its Train
    controller killed) must not keep its worker group's placement group, or later trials
    on the same cluster wait for CPUs forever."""
    import time

    import ray

    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        held = {
            pg_id: pg["bundles"]
            for pg_id, pg in ray.util.placement_group_table().items()
            if pg["state"] != "REMOVED"
        }
        assert time.monotonic() < deadline, f"CPUs still held by placement groups {held}"
        time.sleep(1)


def _ids(result: dict) -> list[str]:
    return [c["run_id"] for c in result["children"]]


def test_killed_driver_then_same_job_finishes_only_the_unfinished_trials(workdir, ray_cluster):
    import os
    import signal
    import subprocess
    import sys
    import time

    epochs = 6
    body = {
        **DIGITS,
        "name": "killed",
        "rule": {"name": ["bp", "fa"]},
        "seed": [0, 1],
        "schedule": {"epochs": epochs},
        "checkpoint": {"min_interval_s": 0},  # one per epoch: the kill cuts after one
    }
    (workdir / "spec.json").write_text(json.dumps(body))
    from trainers.tracking import default_tracking_uri, find_job_runs

    uri = default_tracking_uri()
    find_job_runs("killed", uri)  # creates the store first: two first users race its migration
    driver = subprocess.Popen(
        [sys.executable, "-m", "trainers.launch", "spec.json", "--job-id", "killed"],
        cwd=workdir,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
    )
    deadline = time.monotonic() + 900
    try:
        while True:  # until a trial has finished while others have not
            assert time.monotonic() < deadline and driver.poll() is None
            _, runs = find_job_runs("killed", uri)
            if any(r.info.status == "FINISHED" for r in runs):
                break
            time.sleep(0.3)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    _, before = find_job_runs("killed", uri)
    finished = {r.info.run_id: r for r in before if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 4
    # trials the kill cut after a checkpoint (one per epoch), with the epoch they reached
    cut = {
        r.info.run_id: r.data.metrics["epoch"]
        for r in before
        if r.info.status == "RUNNING" and r.data.metrics.get("epoch", 0) >= 2
    }

    result = run_experiment(ExperimentSpec.model_validate(body), job_id="killed")
    assert result["status"] == "FINISHED", result
    assert [c["setting"] for c in result["children"]] == [
        "bp seed=0",
        "bp seed=1",
        "fa seed=0",
        "fa seed=1",
    ]
    client = MlflowClient(uri)
    for child in result["children"]:
        run_id = child["run_id"]
        steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
        resumed = client.get_metric_history(run_id, "resumed_from_epoch")
        if run_id in finished:  # skipped: not trained again
            assert child["skipped"] and len(steps) == epochs and not resumed
            assert client.get_run(run_id).info.end_time == finished[run_id].info.end_time
        else:
            assert not child["skipped"] and set(steps) == set(range(1, epochs + 1))
        if run_id in cut:  # resumed from its last checkpoint, not from scratch
            # (Ray Train registers a reported checkpoint a moment after the report)
            assert resumed and resumed[-1].value >= cut[run_id] - 1, (child["setting"], resumed)
        assert client.get_run(run_id).info.status == "FINISHED"


def _trial_processes() -> list[str]:
    """This session's Ray processes running a Tune trial, a Train controller or a Train worker
    (Ray names a process after the actor it runs; the test's cluster descends from pytest)."""
    import psutil

    names = ("ray::ImplicitFunc", "ray::TrainController", "ray::RayTrainWorker")
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:  # ended meanwhile
            continue
        if line.startswith(names):
            found.append(line)
    return found


def test_cancel_through_the_service_stops_every_trial(workdir, ray_cluster):
    _cancel_stops_every_trial(workdir, ray_cluster)


def test_cancel_of_a_driver_on_its_own_local_ray_marks_its_runs_killed(workdir):
    """The service's default (no Ray address): the driver starts a local Ray, whose
    processes share its process group; cancel must reach the driver before that Ray."""
    _cancel_stops_every_trial(workdir, None)


def _cancel_stops_every_trial(workdir, ray_address: str | None) -> None:
    """Cancel a 2-setting job once both train: CANCELLED, its trial processes gone, its
    MLflow runs KILLED (no longer logging)."""
    import time

    from service.api.server import ServerThread
    from service.client import Client
    from service.core.settings import Settings

    settings = Settings(RUN_DIR=workdir / "bioprop-runs", RAY_ADDRESS=ray_address)
    body = {**DIGITS, "name": "cancelled", "rule": {"name": ["bp", "fa"]}}
    body["schedule"] = {"epochs": 200}  # far longer than the test waits
    client_uri = settings.MLFLOW_URI
    with ServerThread(settings) as server, Client(server.url) as client:
        job = client.submit(body)
        deadline = time.monotonic() + 400
        while True:  # both trials training
            assert time.monotonic() < deadline, client.logs(job["id"], tail=40)
            children = (client.get(job["id"]).get("progress") or {}).get("children") or []
            epochs = [(c.get("metrics") or {}).get("epoch", 0) for c in children]
            if len(epochs) == 2 and min(epochs) >= 1:
                break
            time.sleep(0.5)
        assert len(_trial_processes()) >= 2  # 2 trials, each training in its own process
        client.cancel(job["id"])
        job = client.wait(job["id"], timeout=120, poll=0.5)
        assert job["state"] == "CANCELLED"
        # the driver stopped by itself (it wrote its result), not by the SIGKILL after the grace
        result = settings.RUN_DIR / "jobs" / job["id"] / "result.json"
        assert result.exists(), client.logs(job["id"], tail=40)
        assert json.loads(result.read_text())["status"] == "KILLED"
    deadline = time.monotonic() + 60
    while _trial_processes():  # the driver's actors end with it
        assert time.monotonic() < deadline, _trial_processes()
        time.sleep(0.5)
    client = MlflowClient(client_uri)
    from trainers.tracking import find_job_runs

    parent, children = find_job_runs(job["id"], client_uri)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    logged = [len(client.get_metric_history(c.info.run_id, "epoch")) for c in children]
    time.sleep(3)
    assert [len(client.get_metric_history(c.info.run_id, "epoch")) for c in children] == logged


@pytest.mark.timeout(600)
def test_setting_whose_worker_group_cannot_start_frees_its_cpus_for_the_next(workdir, ray_cluster):
    """The first setting's DDP set-up fails while its worker group starts (its workers are
    pointed at a network interface that does not exist: ``tests/ray_faults.py``, seed 13),
    after its placement group took both CPUs: that setting is FAILED with the reason, its
    CPUs are given back, and the next setting trains to the end."""
    spec = ExperimentSpec.model_validate(
        {
            **DIGITS,
            "name": "bad-start",
            "rule": {"name": "bp"},
            "seed": [13, 0],
            "schedule": {"epochs": 1},
            "scale": {"workers": 2},  # the whole cluster: one setting at a time
        }
    )
    result = run_experiment(spec, job_id="bad-start")
    assert result["status"] == "FAILED", result
    broken, good = result["children"]
    assert broken["setting"] == "bp seed=13" and broken["status"] == "FAILED", broken
    assert "nonet13" in broken["error"], broken["error"]
    assert good["setting"] == "bp seed=0" and good["status"] == "FINISHED", good
    assert good["metrics"]["epoch"] == 1
    _assert_cpus_released()
