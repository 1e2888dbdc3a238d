"""Processes the cluster tests start and always stop: Ray nodes, servers, the control plane.

Every process starts in a session of its own (optionally inside a network namespace, via
``ip netns exec``); stopping it sends SIGTERM to its process group, waits, then SIGKILLs
every process of its session, so a Ray node's raylet, GCS, dashboard and workers go with it
and nothing of another test run (or another user's Ray) is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from service.backends.processes import session_members

BIN = Path(sys.executable).parent
RAY_TOKEN = "bioprop-cluster-test-token-000000000000"  # Ray's token auth on every node


class Proc:
    """One started process (and its session): ``stop()`` ends all of it."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        netns: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        sid = self.popen.pid
        if self.alive():
            try:
                os.killpg(sid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        for pid in session_members(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)


def wait_until(check: Callable[[], object], what: str, timeout: float, procs=()) -> object:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (with the
    logs of ``procs`` that died) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.3)
    logs = "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in procs)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})\n{logs}")


def http_ok(url: str, **kwargs) -> bool:
    return httpx.get(url, timeout=2, **kwargs).status_code == 200


def ray_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {RAY_TOKEN}"}


def ray_job(dashboard: str, job_id: str) -> dict | None:
    """Ray's record of a job by submission id, read from the dashboard's REST API."""
    response = httpx.get(f"{dashboard}/api/jobs/{job_id}", headers=ray_headers(), timeout=10)
    return None if response.status_code == 404 else response.json()


def ray_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The environment of a Ray node (and of the control plane talking to it)."""
    env = {k: v for k, v in base.items() if not k.startswith(("RAY_", "BIOPROP_"))}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=RAY_TOKEN,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DEDUP_LOGS="0",
        PATH=f"{BIN}:{base.get('PATH', '')}",
    )
    env.update(extra)
    return env


def ray_start_cmd(*args: str) -> list[str]:
    return [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args]
