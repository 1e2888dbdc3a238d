"""``bioprop bench first-step``: time from ``POST /v1/experiments`` to the first training step,
with each kind of driver the service can run.

One Ray cluster (``ray start --head --block`` with its dashboard, on 127.0.0.1, token auth)
and, per mode, a fresh ``bioprop serve`` subprocess in front of it:

- ``ray-job``: ``BIOPROP_RAY_JOBS_URL`` set: the driver is submitted as a Ray job;
- ``local``: ``RAY_ADDRESS`` set: the driver is a local subprocess joining the same cluster;
- ``local-own-ray`` (optional): neither: the driver starts a Ray of its own (``make demo``'s
  path, which also pays Ray's start-up).

The spec is one setting of the digits MLP with 1 worker and 1 epoch. "First step" is the
MLflow timestamp of the ``ddp_nodes`` metric, which every worker loop logs once, right before
its first optimizer step; the time is that timestamp minus the wall clock at submission.
Rounds alternate between modes.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.api.server import free_port

__all__ = ["MODES", "bench_first_step"]

MODES = ("ray-job", "local", "local-own-ray")
SPEC: dict[str, Any] = {
    "name": "bench-first-step",
    "model": "mlp",
    "data": {"kind": "digits", "image_size": 8},
    "rule": {"name": "bp"},
    "schedule": {"epochs": 1},
    "batch_size": 64,
    "scale": {"workers": 1, "cpus_per_worker": 1},
}
QUIET = {"progress": "false"}  # the service then leaves MLflow's store alone
TOKEN = "bench-first-step-token-00000000000000"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _wait(check, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _first_step_ms(uri: str, job_id: str) -> float | None:
    """Epoch milliseconds of the job's first ``ddp_nodes`` metric (None: not yet)."""
    from mlflow import MlflowClient

    from trainers.tracking import find_job_runs

    _, children = find_job_runs(job_id, uri)
    for child in children:
        history = MlflowClient(uri).get_metric_history(child.info.run_id, "ddp_nodes")
        if history:
            return float(min(m.timestamp for m in history))
    return None


def bench_first_step(*, rounds: int = 3, modes: tuple[str, ...] = MODES[:2]) -> dict[str, Any]:
    """Seconds from submission to first step per mode: every round, and the median."""
    # short: Ray's socket paths under it must stay within AF_UNIX's 107 bytes (with the
    # longer prefix the dashboard's MetricsHead socket did not, and the dashboard died)
    root = Path(tempfile.mkdtemp(prefix="bpfs-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BIOPROP_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, RAY_USAGE_STATS_ENABLED="0")
    env.pop("MLFLOW_TRACKING_URI", None)
    gcs, dashboard = free_port(), free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    cmd = [_bin("ray"), "start", "--block", "--head", "--num-cpus", "2", "--disable-usage-stats",
           "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--temp-dir", str(root / "ray")]  # fmt: skip
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    head = subprocess.Popen(
        cmd,
        env=env,
        stdout=open(root / "ray.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        _wait(
            lambda: httpx.get(f"http://127.0.0.1:{dashboard}/api/version", headers=auth).is_success,
            "the Ray dashboard",
            300,
        )
        for index in range(rounds):
            for mode in modes:
                times[mode].append(_one(root, env, mode, index, gcs, dashboard))
    except BaseException as exc:
        _stop(head)
        # kept for the post-mortem: Ray's logs, each round's service log and stores
        raise RuntimeError(f"first-step bench failed ({exc}); logs kept in {root}") from exc
    _stop(head)
    shutil.rmtree(root, ignore_errors=True)
    return {
        mode: {"rounds_s": [round(t, 2) for t in ts], "median_s": round(statistics.median(ts), 2)}
        for mode, ts in times.items()
    }


def _one(
    root: Path, base: dict[str, str], mode: str, index: int, gcs: int, dashboard: int
) -> float:
    run_dir = root / f"{mode}-{index}"
    port = free_port()
    env = {
        **base,
        "BIOPROP_RUN_DIR": str(run_dir),
        "BIOPROP_DATA_CACHE": str(root / "cache"),
        "BIOPROP_STORAGE_PATH": str(root / "checkpoints"),
    }
    if mode == "ray-job":
        env["BIOPROP_RAY_JOBS_URL"] = f"http://127.0.0.1:{dashboard}"
    elif mode == "local":
        env["BIOPROP_RAY_ADDRESS"] = f"127.0.0.1:{gcs}"
    elif mode != "local-own-ray":
        raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
    run_dir.mkdir(parents=True)
    server = subprocess.Popen(
        [_bin("bioprop"), "serve", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=open(run_dir / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    try:
        _wait(lambda: httpx.get(f"{url}/healthz").is_success, "the service", 120)
        submitted = time.time()
        job = httpx.post(f"{url}/v1/experiments", json=SPEC, timeout=30).json()
        final = ("SUCCEEDED", "FAILED", "CANCELLED")
        state = _wait(
            lambda: (
                (s := httpx.get(f"{url}/v1/experiments/{job['id']}", params=QUIET).json())["state"]
                in final
                and s
            ),
            "the job's end",
            900,
        )
        if state["state"] != "SUCCEEDED":
            raise RuntimeError(f"job {job['id']} {state['state']}: {state.get('error')}")
        # read MLflow once the driver is done with it: a second process creating the SQLite
        # store's tables while the driver does races it (alembic "table already exists")
        first = _first_step_ms(uri, job["id"])
        assert first is not None, f"job {job['id']} logged no ddp_nodes"
        return first / 1000 - submitted
    finally:
        _stop(server)
