"""Shared fixtures: every test runs in its own working directory so run outputs stay out of the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session; drivers spawned by tests join it via RAY_ADDRESS."""
    import ray

    from trainers.ray_setup import RUNTIME_ENV

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, runtime_env=RUNTIME_ENV)
    address = ctx.address_info["gcs_address"]
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    yield address
    if previous is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = previous
    ray.shutdown()
