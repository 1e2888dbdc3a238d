"""``bioprop run`` of a spec in a subprocess, as a user runs it, for the data tests that
train from object storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def bioprop_run_child(workdir: Path, spec: dict, job_id: str, ray_address: str) -> Any:
    """``bioprop run spec.json --job-id JOB_ID`` in ``workdir`` on the Ray cluster at
    ``ray_address``; asserts it exits 0 and returns the job's one setting's MLflow run."""
    from trainers.tracking import default_tracking_uri, find_job_runs

    (workdir / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "run", "spec.json", "--job-id", job_id],
        cwd=workdir,
        env={**os.environ, "RAY_ADDRESS": ray_address},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, children = find_job_runs(job_id, default_tracking_uri())
    (run,) = children
    return run
