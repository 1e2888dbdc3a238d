"""Helpers shared by the service tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from service.settings import Settings

FAKE_DRIVER = [sys.executable, str(Path(__file__).with_name("fake_driver.py"))]
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def make_settings(run_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "RUN_DIR": run_dir,
        "DRIVER_CMD": FAKE_DRIVER,
        "POLL_INTERVAL_S": 0.05,
        "CANCEL_GRACE_S": 5.0,
        "MAX_CONCURRENT_JOBS": 4,
    }
    values.update(overrides)
    return Settings(**values)


def spec(name: str = "ok", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": name,
        "rule": {"name": ["bp", "fa"]},
        "schedule": {"epochs": 1},
    }
    body.update(extra)
    return body


def wait_state(
    http: httpx.Client, job_id: str, states: tuple[str, ...] = FINAL, timeout: float = 20.0
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/experiments/{job_id}", params={"progress": "false"}).json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job['state']}")
        time.sleep(0.05)
