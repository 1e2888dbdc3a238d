"""A job's comparison report over real HTTP (``GET /v1/experiments/{id}/report``) and from the
CLI (``bioprop report``, through the service and straight from MLflow). The job is a fake
driver's; its MLflow runs are logged by hand into the service's own store, as a driver would."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from svc_helpers import spec, wait_state
from typer.testing import CliRunner

from service.api.server import ServerThread
from service.cli import app
from trainers.spec import ExperimentSpec
from trainers.summary import write_summary
from trainers.tracking import finish_run, log_epoch, start_child, start_parent

ACC = {"bp": [0.5, 0.75], "fa": [0.25, 0.625]}


def log_sweep(uri: str, job_id: str) -> None:
    """A 2-rule, 2-epoch sweep of ``job_id``, as its driver would log it."""
    sweep = ExperimentSpec.model_validate({"data": {"kind": "digits"}, "rule": {"name": list(ACC)}})
    parent = start_parent(sweep, uri=uri, job_id=job_id)
    for label, setting in sweep.settings():
        child = start_child(setting, uri=uri, parent_run_id=parent, job_id=job_id, setting=label)
        for epoch, acc in enumerate(ACC[label], start=1):
            angle = 1e-6 if label == "bp" else 40.0
            metrics = {"epoch": epoch, "val_acc": acc, "val_loss": 1.0 / epoch}
            metrics |= {"align_fc.angle": angle, "align_mean_angle": angle}
            log_epoch(uri, child, metrics, step=epoch, final=epoch == 2)
        finish_run(uri, child, "FINISHED")
    write_summary(uri, parent)


def final_cells(page: str) -> dict[str, str]:
    """Setting -> the final val_acc cell's exact value, as the page's table holds it."""
    out = {}
    for row in page.split('<tr data-setting="')[1:]:
        setting = row.split('"', 1)[0]
        out[setting] = row.split('data-key="final_val_acc" data-value="')[1].split('"', 1)[0]
    return out


def test_report_over_http_and_from_the_cli(
    server: ServerThread, http: httpx.Client, tmp_path: Path
) -> None:
    job = http.post("/v1/experiments", json=spec("ok-report")).json()
    wait_state(http, job["id"])
    answer = http.get(f"/v1/experiments/{job['id']}/report")
    assert answer.status_code == 409 and "no runs in MLflow yet" in answer.json()["detail"]
    assert http.get("/v1/experiments/nope/report").status_code == 404

    uri = server.settings.MLFLOW_URI
    log_sweep(uri, job["id"])
    time.sleep(2.1)  # the service's progress cache (2 s) forgets "no runs yet"
    answer = http.get(f"/v1/experiments/{job['id']}/report")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert final_cells(answer.text) == {"bp": "0.75", "fa": "0.625"}

    runner = CliRunner()
    out = tmp_path / "via-service.html"
    result = runner.invoke(
        app, ["report", job["id"], "--server", server.url, "--out", str(out), "--no-open"]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "")
    assert final_cells(out.read_text()) == {"bp": "0.75", "fa": "0.625"}

    direct = tmp_path / "direct.html"
    result = runner.invoke(
        app, ["report", job["id"], "--tracking-uri", uri, "--out", str(direct), "--no-open"]
    )
    assert result.exit_code == 0, result.output
    assert final_cells(direct.read_text()) == final_cells(out.read_text())

    result = runner.invoke(app, ["report", "no-such-job", "--tracking-uri", uri, "--no-open"])
    assert result.exit_code == 1 and "no MLflow runs of job 'no-such-job'" in result.output
