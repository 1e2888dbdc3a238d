"""``bioprop run`` stopped by SIGTERM (a batch scheduler's time limit, ``kill``, a node
drain): its MLflow runs are marked KILLED, not left RUNNING, and it says how to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

SPEC = {
    "name": "terminated",
    "model": "mlp",
    "data": {"kind": "digits", "image_size": 8},
    "rule": {"name": "fa"},
    "batch_size": 64,
    "schedule": {"epochs": 500},  # far longer than the test waits
    "scale": {"workers": 1},
}


def test_sigterm_marks_the_runs_killed_and_says_how_to_resume(workdir, ray_cluster):
    from trainers.tracking import default_tracking_uri, find_job_runs

    (workdir / "spec.json").write_text(json.dumps(SPEC))
    uri = default_tracking_uri()
    find_job_runs("term", uri)  # creates the store before the run's first use of it
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "spec.json", "--job-id", "term"],
        cwd=workdir,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:  # until the setting has logged an epoch
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch logged in 300 s"
            _, children = find_job_runs("term", uri)
            if children and children[0].data.metrics.get("epoch", 0) >= 1:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, errs = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + errs
    assert "resume with --job-id term" in errs
    parent, children = find_job_runs("term", uri)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"]
