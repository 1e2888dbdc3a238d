"""A rule, a model, a task and a data kind added from outside the repository
(``BIOPROP_PLUGINS``, :mod:`trainers.plugins`) train through ``bioprop run`` like built-in
ones: the sweep's parent run gets a best-per-rule table by the plugin task's own headline
metric. The plugin is ``bioprop_throwaway.py`` beside this file; it is imported only by the
subprocesses, so this test session's catalogue stays the built-in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SPEC = {
    "name": "plugin",
    "task": "errclass",
    "model": "twolayer",
    "model_params": {"hidden": 8},
    "data": {"kind": "blobs", "image_size": 8},
    "rule": {"name": ["scaled", "bp"]},
    "optim": {"lr": 0.1},
    "batch_size": 16,
    "schedule": {"epochs": 2},
    "scale": {"workers": 1},
}


def _bioprop(args: list[str], cwd: Path, plugins: str, timeout: float):
    env = {**os.environ, "BIOPROP_PLUGINS": plugins}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)  # a laptop's run: its own local Ray, which inherits the path
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_plugin_that_cannot_be_imported_is_named(workdir):
    (workdir / "spec.json").write_text(json.dumps(SPEC))
    proc = _bioprop(["run", "spec.json"], workdir, "no_such_plugin_module", timeout=120)
    assert proc.returncode != 0
    assert "BIOPROP_PLUGINS" in proc.stderr and "no_such_plugin_module" in proc.stderr


def test_without_the_plugin_its_names_are_refused(workdir):
    (workdir / "spec.json").write_text(json.dumps(SPEC))
    proc = _bioprop(["run", "spec.json"], workdir, "", timeout=120)
    assert proc.returncode != 0
    assert "unknown task 'errclass'" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_a_plugin_rule_model_task_and_kind_train_to_a_best_per_rule_table(workdir):
    from mlflow import MlflowClient

    from trainers.tracking import default_tracking_uri, find_job_runs

    (workdir / "spec.json").write_text(json.dumps(SPEC))
    proc = _bioprop(["run", "spec.json", "--job-id", "plug"], workdir, "bioprop_throwaway", 600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    uri = default_tracking_uri()
    parent, children = find_job_runs("plug", uri)
    assert sorted(c.data.params["rule.name"] for c in children) == ["bp", "scaled"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert 0.0 <= child.data.metrics["val_err"] <= 1.0
    client = MlflowClient(uri)
    path = client.download_artifacts(parent.info.run_id, "best_per_rule.json", str(workdir))
    stored = json.loads(Path(path).read_text())
    rows = [dict(zip(stored["columns"], row, strict=True)) for row in stored["data"]]
    assert sorted(row["rule"] for row in rows) == ["bp", "scaled"]
    by_run = {c.info.run_id: c.data.metrics["val_err"] for c in children}
    for row in rows:
        assert row["metric"] == "val_err"
        assert row["value"] == pytest.approx(by_run[row["run_id"]])
        assert float(parent.data.tags[f"bioprop.best.{row['rule']}.val_err"]) == row["value"]
    assert "val_err" in proc.stdout  # the printed best-per-rule table names the plugin's metric
