"""``bioprop serve`` refuses to start, naming the problem, when a service it depends on is
not there: the Ray dashboard of BIOPROP_RAY_JOBS_URL, the MLflow server of the tracking
URI, the bucket of BIOPROP_STORAGE_PATH (checked against a real S3 server, moto's)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.core.preflight import preflight
from service.core.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the with block ends


def test_unreachable_dashboard_and_mlflow_are_named(tmp_path: Path, ray_cluster: str) -> None:
    # RAY_ADDRESS names a live cluster with a dashboard (the session's): Ray's submission
    # client would take it over the URL it is given; the service must check its own URL
    import os

    assert os.environ["RAY_ADDRESS"] == ray_cluster
    ray_port, mlflow_port = _closed_port(), _closed_port()
    settings = Settings(
        RUN_DIR=tmp_path,
        RAY_JOBS_URL=f"http://127.0.0.1:{ray_port}",
        MLFLOW_URI=f"http://127.0.0.1:{mlflow_port}",
    )
    problems = preflight(settings)
    assert len(problems) == 2, problems
    assert f"BIOPROP_RAY_JOBS_URL=http://127.0.0.1:{ray_port} is not usable" in problems[0]
    assert f"MLflow server at http://127.0.0.1:{mlflow_port} is unreachable" in problems[1]


def test_local_defaults_need_nothing(tmp_path: Path) -> None:
    assert preflight(Settings(RUN_DIR=tmp_path, MLFLOW_URI="")) == []


def test_missing_bucket_refuses_serve(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOPROP_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("BIOPROP_STORAGE_PATH", "s3://no-such-bucket/runs")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BIOPROP_RAY_JOBS_URL", raising=False)
    from service.tables import err

    monkeypatch.setattr(err, "width", 60)  # a terminal narrower than the message
    result = CliRunner().invoke(app, ["serve", "--port", str(_closed_port())])
    assert result.exit_code == 2, result.output
    assert "cannot start" in result.output
    assert "bucket 'no-such-bucket' does not exist" in result.output
    # one line per problem, never wrapped to the terminal
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing lost
