"""Helpers shared by the service tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from service.core.settings import Settings

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


def wait_log(http: httpx.Client, job_id: str, text: str, timeout: float = 30.0) -> str:
    """Wait until the job's log holds ``text`` (e.g. a stand-in driver's line saying its
    SIGTERM handler is in place: on a loaded machine Python takes seconds to get there)."""
    deadline = time.monotonic() + timeout
    while True:
        log = http.get(f"/v1/experiments/{job_id}/logs").text
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: {text!r} never in its log: {log[-2000:]}")
        time.sleep(0.05)


def wait_stubborn(run_dir: Path, job_id: str, timeout: float = 30.0) -> int:
    """Wait until a ``stubborn`` stand-in driver ignores SIGTERM (it then writes its helper's
    pid next to its result file); the helper's pid. A cancel sent before that, on a loaded
    machine still starting Python, would end it at once and test nothing."""
    helper = run_dir / "jobs" / job_id / "result.json.helper"
    deadline = time.monotonic() + timeout
    while not (helper.is_file() and helper.read_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"stubborn driver of job {job_id} never got ready")
        time.sleep(0.05)
    return int(helper.read_text())


REPO = Path(__file__).resolve().parents[2]


class ServeProcess:
    """``bioprop serve`` as a subprocess on a free 127.0.0.1 port, configured through
    ``BIOPROP_*`` variables as an operator would (defaults: the fake driver, a fast poll);
    its output goes to ``<run_dir>/serve.log``."""

    def __init__(self, run_dir: Path, **settings: object) -> None:
        from service.api.server import free_port

        self.run_dir = run_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        values: dict[str, object] = {
            "RUN_DIR": run_dir,
            "DRIVER_CMD": json.dumps(FAKE_DRIVER),
            "POLL_INTERVAL_S": 0.05,
            "CANCEL_GRACE_S": 5.0,
            "MAX_CONCURRENT_JOBS": 4,
        }
        values.update(settings)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BIOPROP_")}
        self.env.update({f"BIOPROP_{k}": str(v) for k, v in values.items()})
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, *args: str) -> ServeProcess:
        """Start it (``args``: further ``bioprop serve`` options); returns once /healthz
        answers, RuntimeError with the log's tail when it exits first."""
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        bioprop = Path(sys.executable).with_name("bioprop")
        cmd = [str(bioprop)] if bioprop.exists() else [sys.executable, "-m", "service.cli"]
        with open(run_dir / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "serve", "--port", str(self.port), "--no-access-log", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=run_dir,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bioprop serve did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return (self.run_dir / "serve.log").read_text(errors="replace")

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, then wait; returns how long the process took to exit (SIGKILL and
        AssertionError past ``timeout``)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return 0.0
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"bioprop serve ignored SIGTERM for {timeout} s") from None
        return time.monotonic() - began


def running(proc: ServeProcess) -> Iterator[ServeProcess]:
    """A fixture's body: yield the started service, then stop it (one that already stopped,
    as a test may make it, is fine)."""
    yield proc
    try:
        proc.stop()
    except AssertionError:
        pass
