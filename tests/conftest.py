"""Shared fixtures: every test runs in its own working directory so run outputs stay out of the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
RAY_FAULTS = "tests.ray_faults.BreakDDPOfSeed13"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One local Ray cluster for the session; drivers spawned by tests join it via RAY_ADDRESS.
    Its processes see the ``s3`` endpoint (``AWS_*``, as every node of a real cluster does),
    so a spec's ``storage_path: s3://ckpt/...`` works in any test; without moto, none. Their
    node cache of packed shards (``data.cache``) is a folder of the session's."""
    import ray

    os.environ["BIOPROP_SHARD_CACHE"] = str(tmp_path_factory.mktemp("node-shard-cache"))

    try:
        request.getfixturevalue("s3")  # before the cluster: its processes inherit AWS_*
    except pytest.skip.Exception:
        pass
    # the injected fault of tests/ray_faults.py (settings with seed 13 only), importable
    # by Ray's processes from the repo root
    os.environ["RAY_TRAIN_CALLBACKS"] = RAY_FAULTS
    root = str(Path(__file__).resolve().parents[1])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, paths)])

    from trainers.ray_setup import init_local_ray

    # as bioprop starts its own: a new cluster (never one another test or a `ray start` left
    # on this host), its dashboard on, so stopped trials' CPUs are freed
    ctx = init_local_ray(num_cpus=2, log_to_driver=True)
    address = ctx.address_info["gcs_address"]
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    yield address
    if previous is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = previous
    ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """An S3 endpoint (moto server) with one bucket ``ckpt``; AWS_* point at it."""
    import boto3
    from moto_server import start_moto

    proc, url = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    env = {
        "AWS_ACCESS_KEY_ID": "bioprop",
        "AWS_SECRET_ACCESS_KEY": "bioprop-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket="ckpt")
        yield boto3.client("s3")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def rule_sweep(ray_cluster, tmp_path_factory):
    """One real 3-rule sweep (bp, fa, ss; tiny conv net, 1 worker each, 3 epochs) in its own
    folder, shared by the tests that read a sweep back from MLflow. Returns
    ``(run_experiment's result, folder)``."""
    from tiny_specs import tiny_spec

    from trainers.launch import run_experiment
    from trainers.spec import ExperimentSpec

    root = tmp_path_factory.mktemp("rule-sweep")
    spec = tiny_spec(
        name="tiny",
        rule={"name": ["bp", "fa", "ss"]},
        optim={"lr": 0.05},
        schedule={"epochs": 3},
        scale={"workers": 1},  # two settings at once; DDP runs are tested on their own
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = run_experiment(ExperimentSpec.model_validate(spec), job_id="sweep-1")
    return result, root
