"""Settings from the environment: comma lists, defaults rooted in RUN_DIR, unsafe defaults
refused outside ENVIRONMENT=local, tokens kept secret."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from service.settings import Settings


def test_env_parsing_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOPROP_API_TOKENS", "tok-alpha, tok-beta,,")
    monkeypatch.setenv("BIOPROP_DATA_DIRS", f"{tmp_path}/a,{tmp_path}/b/../c")
    monkeypatch.setenv("BIOPROP_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BIOPROP_DRIVER_CMD", '["python", "driver.py"]')
    settings = Settings()
    assert settings.token_values() == [b"tok-alpha", b"tok-beta"]
    assert settings.DATA_DIRS == [tmp_path / "a", tmp_path / "c"]
    assert settings.DB_URL == f"sqlite:///{tmp_path / 'runs' / 'jobs.db'}"
    assert settings.MLFLOW_URI == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert settings.DRIVER_CMD == ["python", "driver.py"]
    assert "tok-alpha" not in repr(settings) and "tok-beta" not in str(settings.model_dump())


def test_default_driver_is_trainers_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIOPROP_DRIVER_CMD", raising=False)
    assert Settings().DRIVER_CMD == [sys.executable, "-m", "trainers.launch"]


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
