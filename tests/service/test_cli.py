"""The ``bioprop`` CLI against a live service over HTTP (typer's runner, real server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from svc_helpers import spec, wait_state
from typer.testing import CliRunner

from service.cli import app
from service.server import ServerThread

runner = CliRunner()


def test_submit_status_logs_cancel(
    server: ServerThread, http: httpx.Client, tmp_path: Path
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec("ok-cli")))
    result = runner.invoke(app, ["submit", str(path), "--server", server.url])
    assert result.exit_code == 0, result.output
    job_id = result.output.split("submitted job ")[1].split()[0]
    wait_state(http, job_id)

    result = runner.invoke(app, ["status", "--server", server.url])
    assert result.exit_code == 0, result.output
    assert job_id in result.output and "SUCCEEDED" in result.output

    result = runner.invoke(app, ["status", job_id, "--server", server.url])
    assert result.exit_code == 0, result.output
    assert "bp" in result.output and "fa" in result.output

    result = runner.invoke(app, ["logs", job_id, "--server", server.url])
    assert "epoch 5/5" in result.output

    result = runner.invoke(app, ["logs", job_id, "--follow", "--server", server.url])
    assert result.exit_code == 0 and "epoch 5/5" in result.output

    result = runner.invoke(app, ["cancel", job_id, "--server", server.url])
    assert result.exit_code == 1 and "already SUCCEEDED" in result.output


def test_submit_invalid_spec_names_field(server: ServerThread, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec(rule={"name": "nope"})))
    result = runner.invoke(app, ["submit", str(path), "--server", server.url])
    assert result.exit_code == 1
    assert "rule.name" in result.output and "valid rules" in result.output


def test_demo_spec_is_packaged_and_valid() -> None:
    from importlib import resources

    from trainers.spec import load_spec

    loaded = load_spec(resources.files("service").joinpath("demo.yaml").read_text())
    assert loaded.rule_names == ["bp", "fa", "ss"]
    assert loaded.scale.workers == 2 and loaded.batch_size == 32
    assert loaded.schedule.epochs == 3 and loaded.data.image_size == 32
