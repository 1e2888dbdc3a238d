"""``bioprop bench service`` end to end, small: every timed submission is stored once, and
the fresh service's drivers do not outlive the bench."""

from __future__ import annotations

import time
from pathlib import Path

from service.bench import bench_service


def _bench_drivers() -> set[int]:
    """Pids of processes running a bench service's stand-in driver."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"time.sleep(3600)" in cmdline and b"bioprop-bench-" in cmdline:
            pids.add(int(proc.name))
    return pids


def test_bench_service_counts_and_cleans_up() -> None:
    before = _bench_drivers()
    result = bench_service(clients=3, submissions=2, status_seconds=0.3)
    assert result["submissions"] == 6 and result["distinct_job_ids"] == 6
    assert result["submit_p50_ms"] > 0 and result["status_requests"] > 0
    # the queue scenario's running driver was killed (SIGKILL is delivered at once; the
    # process may take a moment to exit on a loaded machine)
    deadline = time.monotonic() + 15
    while not _bench_drivers() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _bench_drivers() <= before
