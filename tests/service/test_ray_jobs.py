"""What the control plane hands Ray for a job (``service/backends/ray_jobs.py``) and how it reads the
driver's result back; the whole path against a real cluster is tests/cluster/."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from service.backends.ray_jobs import RayJobs, parse_result
from service.core.settings import Settings


def test_submission_carries_spec_and_env_but_no_credentials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "do-not-leak-either")
    settings = Settings(
        RUN_DIR=tmp_path,
        RAY_JOBS_URL="http://ray-head:8265",
        MLFLOW_URI="http://mlflow:5000",
        STORAGE_PATH="s3://ckpt/runs",
        DATA_CACHE=tmp_path / "cache",
        CANCEL_GRACE_S=7.5,
    )
    ray = RayJobs(settings)
    spec = {"name": "x", "rule": {"name": ["bp", "fa"]}}
    # the head's own `python`: the control plane's interpreter path means nothing there
    assert shlex.split(ray.entrypoint("job-1")) == [
        "python", "-m", "trainers.launch",
        "--spec-env", "BIOPROP_SPEC", "--job-id", "job-1", "--result", "-",
    ]  # fmt: skip
    env = ray.env_vars(spec)
    assert json.loads(env.pop("BIOPROP_SPEC")) == spec
    assert env == {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "RAY_JOB_STOP_WAIT_TIME_S": "8",
        "BIOPROP_STORAGE_PATH": "s3://ckpt/runs",
        "BIOPROP_DATA_CACHE": str(tmp_path / "cache"),
    }


def test_result_is_the_last_marked_line() -> None:
    logs = "\n".join(
        [
            'BIOPROP_RESULT {"status": "FAILED"}',  # an earlier attempt's
            "epoch 1 ...",
            'BIOPROP_RESULT {"status": "FINISHED", "parent_run_id": "p"}',
            "shutting down",
        ]
    )
    assert parse_result(logs) == {"status": "FINISHED", "parent_run_id": "p"}
    assert parse_result("no result here\n") is None
    assert parse_result("BIOPROP_RESULT {not json") is None
