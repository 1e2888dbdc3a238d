"""Settings from the environment: comma lists, defaults rooted in RUN_DIR, unsafe defaults
refused outside ENVIRONMENT=local, tokens kept secret."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from service.core.settings import Settings


def test_env_parsing_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOPROP_API_TOKENS", "tok-alpha, tok-beta,,")
    monkeypatch.setenv("BIOPROP_DATA_DIRS", f"{tmp_path}/a,{tmp_path}/b/../c")
    monkeypatch.setenv("BIOPROP_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BIOPROP_DRIVER_CMD", '["python", "driver.py"]')
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings()
    assert settings.token_values() == [b"tok-alpha", b"tok-beta"]
    assert settings.DATA_DIRS == [tmp_path / "a", tmp_path / "c"]
    assert settings.DB_URL == f"sqlite:///{tmp_path / 'runs' / 'jobs.db'}"
    assert settings.MLFLOW_URI == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert settings.DRIVER_CMD == ["python", "driver.py"]
    assert "tok-alpha" not in repr(settings) and "tok-beta" not in str(settings.model_dump())


def test_cluster_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's MLFLOW_TRACKING_URI is used, not overwritten; BIOPROP_MLFLOW_URI wins."""
    monkeypatch.setenv("BIOPROP_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("BIOPROP_RAY_JOBS_URL", "http://ray-head:8265/")
    monkeypatch.setenv("BIOPROP_STORAGE_PATH", "s3://bucket/runs")
    monkeypatch.setenv("BIOPROP_DATA_CACHE", str(tmp_path / "shared"))
    settings = Settings()
    assert settings.MLFLOW_URI == "http://mlflow:5000"
    assert settings.RAY_JOBS_URL == "http://ray-head:8265"
    assert settings.STORAGE_PATH == "s3://bucket/runs"
    assert settings.DATA_CACHE == tmp_path / "shared"
    monkeypatch.setenv("BIOPROP_MLFLOW_URI", "http://other:5000")
    assert Settings().MLFLOW_URI == "http://other:5000"
    monkeypatch.setenv("BIOPROP_RAY_JOBS_URL", "ray://ray-head:10001")
    with pytest.raises(ValidationError, match="dashboard's http"):
        Settings()
    monkeypatch.setenv("BIOPROP_RAY_JOBS_URL", "")
    assert Settings().RAY_JOBS_URL is None


def test_default_driver_is_trainers_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIOPROP_DRIVER_CMD", raising=False)
    monkeypatch.delenv("BIOPROP_RAY_JOBS_URL", raising=False)
    assert Settings().DRIVER_CMD == [sys.executable, "-m", "trainers.launch"]
    # a Ray job's driver runs on the head: the head's `python`, not this process's path
    monkeypatch.setenv("BIOPROP_RAY_JOBS_URL", "http://ray-head:8265")
    assert Settings().DRIVER_CMD == ["python", "-m", "trainers.launch"]
    monkeypatch.setenv("BIOPROP_DRIVER_CMD", '["/opt/bioprop/bin/python", "-m", "trainers.launch"]')
    assert Settings().DRIVER_CMD[0] == "/opt/bioprop/bin/python"


def test_production_refuses_open_defaults(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="API_TOKENS must be set"):
        Settings(ENVIRONMENT="production", RUN_DIR=tmp_path)
    with pytest.raises(ValidationError, match="DATA_DIRS must be set"):
        Settings(ENVIRONMENT="production", RUN_DIR=tmp_path, API_TOKENS="t")
    Settings(ENVIRONMENT="production", RUN_DIR=tmp_path, API_TOKENS="t", DATA_DIRS=str(tmp_path))


def test_serve_refuses_open_api_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIOPROP_API_TOKENS", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "without BIOPROP_API_TOKENS" in result.output
