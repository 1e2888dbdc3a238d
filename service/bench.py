"""``bioprop bench service``: submission latency under concurrent clients, status requests/s.

Against a fresh service (a ``bioprop serve`` subprocess rooted in a temporary folder whose
driver is a no-op ``python -c pass``, so only the control plane is timed) or a running one.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from service.schemas import DEMO_SPEC_EXAMPLE
from service.server import free_port

__all__ = ["bench_service"]

NOOP_DRIVER = [sys.executable, "-c", "pass"]


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
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        spec = dict(DEMO_SPEC_EXAMPLE, name="bench")
        for _ in range(3):  # warm-up: connections, imports, first queries
            (await http.post("/v1/experiments", json=spec)).raise_for_status()
        latencies: list[float] = []
        ids: list[str] = []

        async def submitter() -> None:
            for _ in range(submissions):
                t0 = time.perf_counter()
                response = await http.post("/v1/experiments", json=spec)
                latencies.append(time.perf_counter() - t0)
                response.raise_for_status()
                ids.append(response.json()["id"])

        t0, c0 = time.perf_counter(), cpu()
        await asyncio.gather(*(submitter() for _ in range(clients)))
        submit_wall, submit_cpu = time.perf_counter() - t0, cpu() - c0
        await http.get(f"/v1/experiments/{ids[0]}")  # warm the MLflow progress reader

        count = 0
        status_latencies: list[float] = []
        deadline = time.perf_counter() + status_seconds

        async def poller(k: int) -> None:
            nonlocal count
            i = k
            while time.perf_counter() < deadline:
                t1 = time.perf_counter()
                response = await http.get(f"/v1/experiments/{ids[i % len(ids)]}")
                status_latencies.append(time.perf_counter() - t1)
                response.raise_for_status()
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


def bench_service(
    *,
    server: str | None = None,
    clients: int = 50,
    submissions: int = 4,
    status_seconds: float = 5.0,
    token: str | None = None,
    access_log: bool = True,
) -> dict[str, Any]:
    """Measure a running service at ``server``, or a fresh ``bioprop serve`` subprocess."""
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
            BIOPROP_DRIVER_CMD=json.dumps(NOOP_DRIVER),
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
            return asyncio.run(
                _run(
                    url,
                    clients=clients,
                    submissions=submissions,
                    status_seconds=status_seconds,
                    token=None,
                    server_pid=proc.pid,
                )
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
