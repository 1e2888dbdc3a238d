"""The ``bioprop`` CLI against a live service over HTTP (typer's runner, real server)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from svc_helpers import FAKE_DRIVER, spec, wait_state
from typer.testing import CliRunner

from service.api.server import ServerThread
from service.cli import app

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


def test_token_option_and_env(
    tmp_path: Path, start_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--token`` (or ``BIOPROP_TOKEN``) is sent as the bearer token; a service with tokens
    refuses the commands without one (deploy/README.md submits this way)."""
    from svc_helpers import make_settings

    server = start_server(make_settings(tmp_path / "runs", API_TOKENS="alpha-token"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec("token-cli")))
    monkeypatch.delenv("BIOPROP_TOKEN", raising=False)
    refused = runner.invoke(app, ["submit", str(path), "--server", server.url])
    assert refused.exit_code == 1 and "401" in refused.output
    wrong = runner.invoke(app, ["status", "--server", server.url, "--token", "alpha-tokeN"])
    assert wrong.exit_code == 1 and "401" in wrong.output
    result = runner.invoke(
        app, ["submit", str(path), "--server", server.url, "--token", "alpha-token"]
    )
    assert result.exit_code == 0, result.output
    job_id = result.output.split("submitted job ")[1].split()[0]
    monkeypatch.setenv("BIOPROP_TOKEN", "alpha-token")
    result = runner.invoke(app, ["status", job_id, "--server", server.url])
    assert result.exit_code == 0 and job_id in result.output, result.output


def test_commands_without_a_service_say_how_to_start_one(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for args in (["status"], ["status", "abc"], ["logs", "abc"], ["cancel", "abc"]):
        result = runner.invoke(app, [*args, "--server", url])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), args  # no crash
        text = " ".join(result.output.split())
        assert f"no bioprop service answers at {url}" in text and "bioprop serve" in text, args


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


def test_demo_plumbing_with_stand_in_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bioprop demo` end to end over HTTP, the trainers' driver replaced by the stand-in
    (the real-Ray walk of the same path is the trainers' end-to-end test)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BIOPROP_DRIVER_CMD", json.dumps(FAKE_DRIVER))
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "demo-sweep" in result.output and "SUCCEEDED" in result.output
    for rule in ("bp", "fa", "ss"):
        assert f"│ {rule} " in result.output
    assert "make mlflow-ui" in result.output
    assert (tmp_path / "bioprop-runs" / "jobs.db").exists()

    bad = tmp_path / "fail.yaml"
    bad.write_text(yaml.safe_dump(spec("fail-demo")))
    result = runner.invoke(app, ["demo", "--spec", str(bad)])
    assert result.exit_code == 1
    assert "boom in the training loop" in result.output


def test_rules_lists_every_registered_rule_with_its_parameters_and_defaults() -> None:
    from trainers.rules import RULES

    result = runner.invoke(app, ["rules"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    for name, rule in RULES.items():  # the implementations, not the catalogue printed
        assert name in rows, name
        for key, default in rule.defaults.items():
            assert f"{key} = {default!r}" in result.output, (name, key)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("batchsize: 32\n", "batchsize: no such field; did you mean batch_size?"),
        ("schedule: {epoch: 2}\n", "schedule.epoch: no such field; did you mean epochs?"),
        ("optim: {lr: -0.05}\n", "optim.lr: Input should be greater than 0, got -0.05"),
        ("rule: {name: [bp, fa}\n", "expected ',' or ']', but got '}'"),  # not eaten as markup
        (
            "rule: {name: [fa, kp], params: {decay: 0.001}}\n",
            "rule.params.decay: rule 'fa' has no parameter 'decay'; its parameters: none. Every "
            "rule of the sweep gets rule.params",
        ),
    ],
)
def test_run_says_what_is_wrong_with_a_spec_in_its_terms(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nmodel: mlp\ndata: {kind: digits}\n" + text)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"invalid spec {path}: " in result.output and said in result.output, result.output
    assert "errors.pydantic.dev" not in result.output and "<unicode string>" not in result.output


def test_run_names_a_missing_data_root_without_a_traceback(workdir: Path) -> None:
    """``bioprop run`` checks the data root before anything starts; what is wrong is one
    line naming it, exit 2, as for an invalid spec."""
    path = workdir / "spec.yaml"
    data = {"kind": "imagefolder", "root": str(workdir / "nope")}
    path.write_text(yaml.safe_dump({"name": "noroot", "model": "convnet", "data": data}))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert f"error: data.root not found: {workdir / 'nope'}" in result.output
    assert "Traceback" not in result.output
    # checked before a job id is given out: nothing to resume, no run folder left behind
    assert "resume it with" not in result.output
    assert not (workdir / "bioprop-runs" / "runs").exists()
