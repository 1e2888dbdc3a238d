"""Progress read back from a real MLflow sqlite store written by ``trainers.tracking``."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.progress import ProgressReader


@pytest.mark.slow
def test_progress_reads_the_jobs_runs(tmp_path: Path) -> None:
    tracking = pytest.importorskip("trainers.tracking")
    from trainers.spec import load_spec

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reader = ProgressReader(uri, ttl=0)
    assert reader.read("job-1") is None  # no store yet: nothing read, nothing created
    assert not (tmp_path / "mlflow.db").exists()

    spec = load_spec({"name": "p", "rule": {"name": ["bp", "fa"]}})
    parent = tracking.start_parent(spec, uri=uri, job_id="job-1")
    for setting in spec.expand():
        child = tracking.start_child(setting, uri=uri, parent_run_id=parent, job_id="job-1")
        tracking.log_metrics(uri, child, {"epoch": 1, "val_acc": 0.5}, step=1)

    summary = reader.read("job-1")
    assert summary["parent_run_id"] == parent
    assert [c["rule"] for c in summary["children"]] == ["bp", "fa"]
    assert summary["children"][0]["metrics"]["val_acc"] == 0.5
    assert reader.read("job-2") is None  # another job's runs are not this one's
