"""``bioprop bench service``: submission latency under concurrent clients, status requests/s.

Against a fresh service (a ``bioprop serve`` subprocess rooted in a temporary folder) or a
running one. The fresh service's driver does no training, so only the control plane is
timed, in one of two scenarios (``driver``):

- ``queue``: the driver runs until the bench ends (a real job runs minutes to days), so the
  first job holds the cluster (``MAX_CONCURRENT_JOBS=1``) and every other submission waits
  PENDING: many users submitting to a busy cluster. At the end the service is stopped and
  the driver it left running is killed.
- ``churn``: the driver exits at once (``/bin/true``), so the scheduler claims, spawns and
  finishes a job for every submission while submissions keep coming: a stress case.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import httpx

from service.api.schemas import DEMO_SPEC_EXAMPLE
from service.api.server import free_port
from service.core import store

__all__ = ["bench_service"]

DRIVERS = {
    "queue": [sys.executable, "-c", "import time; time.sleep(3600)"],
    "churn": [
        shutil.which("true") or sys.executable,
        *([] if shutil.which("true") else ["-c", "pass"]),
    ],
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process, from /proc (Linux)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(
    url: str,
    *,
    clients: int,
    submissions: int,
    status_seconds: float,
    token: str | None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    def cpu() -> float:
        return _cpu_seconds(server_pid) if server_pid else float("nan")

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # aiohttp, not httpx: at 50 concurrent requests httpx's client spends ~5 ms of CPU per
    # request, so on a small machine the load generator, not the server, was measured
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        base_url=url, headers=headers, connector=connector, timeout=timeout
    ) as http:
        spec = dict(DEMO_SPEC_EXAMPLE, name="bench")

        async def post() -> str:
            async with http.post("/v1/experiments", json=spec) as response:
                response.raise_for_status()
                return (await response.json())["id"]

        async def get(job_id: str) -> None:
            async with http.get(f"/v1/experiments/{job_id}") as response:
                response.raise_for_status()
                await response.read()

        # warm-up, untimed: one submission per client, so all connections are open and
        # first-use costs (imports, statement caches) are paid before the clock starts
        await asyncio.gather(*(post() for _ in range(clients)))
        latencies: list[float] = []
        ids: list[str] = []

        async def submitter() -> None:
            for _ in range(submissions):
                t0 = time.perf_counter()
                job_id = await post()
                latencies.append(time.perf_counter() - t0)
                ids.append(job_id)

        t0, c0 = time.perf_counter(), cpu()
        await asyncio.gather(*(submitter() for _ in range(clients)))
        submit_wall, submit_cpu = time.perf_counter() - t0, cpu() - c0
        await get(ids[0])  # warm the MLflow progress reader

        count = 0
        status_latencies: list[float] = []
        deadline = time.perf_counter() + status_seconds

        async def poller(k: int) -> None:
            nonlocal count
            i = k
            while time.perf_counter() < deadline:
                t1 = time.perf_counter()
                await get(ids[i % len(ids)])
                status_latencies.append(time.perf_counter() - t1)
                count += 1
                i += clients

        t0, c0 = time.perf_counter(), cpu()
        await asyncio.gather(*(poller(k) for k in range(clients)))
        status_wall, status_cpu = time.perf_counter() - t0, cpu() - c0
    ms = [x * 1000 for x in latencies]
    return {
        "clients": clients,
        "submissions": len(ms),
        "distinct_job_ids": len(set(ids)),
        "submit_p50_ms": statistics.median(ms),
        "submit_p99_ms": _percentile(ms, 99),
        "submit_max_ms": max(ms),
        "submit_per_s": len(ms) / submit_wall,
        "server_cpu_ms_per_submit": submit_cpu * 1000 / len(ms),
        "status_requests": count,
        "status_per_s": count / status_wall,
        "status_p50_ms": statistics.median(status_latencies) * 1000,
        "status_p99_ms": _percentile([x * 1000 for x in status_latencies], 99),
        "server_cpu_ms_per_status": status_cpu * 1000 / max(1, count),
    }


def _kill_drivers(db_url: str) -> None:
    """SIGKILL the process group of every driver the fresh service left running (drivers
    outlive the service by design). Cancelling through the API instead would let the
    scheduler start the next PENDING job's driver before the service stops."""
    engine = store.make_engine(db_url)
    try:
        with engine.connect() as conn:
            active = store.active_jobs(conn=conn)
    finally:
        engine.dispose()
    for job in active:
        if job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def bench_service(
    *,
    server: str | None = None,
    clients: int = 50,
    submissions: int = 10,
    status_seconds: float = 5.0,
    token: str | None = None,
    access_log: bool = True,
    driver: str = "queue",
) -> dict[str, Any]:
    """Measure a running service at ``server``, or a fresh ``bioprop serve`` subprocess
    whose drivers follow the ``driver`` scenario (``queue`` or ``churn``, see the module)."""
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {sorted(DRIVERS)}, not {driver!r}")
    if server is not None:
        return asyncio.run(
            _run(
                server,
                clients=clients,
                submissions=submissions,
                status_seconds=status_seconds,
                token=token,
            )
        )
    with tempfile.TemporaryDirectory(prefix="bioprop-bench-") as tmp:
        port = free_port()
        env = dict(os.environ)
        env.update(
            BIOPROP_RUN_DIR=tmp,
            BIOPROP_DRIVER_CMD=json.dumps(DRIVERS[driver]),
            BIOPROP_API_TOKENS="",
            BIOPROP_DB_URL="",
            BIOPROP_MLFLOW_URI="",
        )
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
        if not access_log:
            cmd.append("--no-access-log")
        log = open(os.path.join(tmp, "serve.log"), "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"service did not start; see {tmp}/serve.log")
                time.sleep(0.2)
            result = asyncio.run(
                _run(
                    url,
                    clients=clients,
                    submissions=submissions,
                    status_seconds=status_seconds,
                    token=None,
                    server_pid=proc.pid,
                )
            )
            return {"driver": driver, **result}
        finally:
            proc.terminate()  # the scheduler stops with it: no further driver starts
            proc.wait(timeout=30)
            log.close()
            _kill_drivers(f"sqlite:///{tmp}/jobs.db")
