"""POSIX process plumbing for driver subprocesses: spawn one in a session of its own, tell
whether a pid is still a given job's driver, signal its process group (and, for SIGKILL,
its whole session), read the tail of its log.

No job states here: :mod:`service.core.scheduler` decides what to start, stop and record; this
module only does it to processes. A driver is either our child (a ``Popen``, whose exit
status we learn) or a bare pid adopted after a service restart (alive or gone, no status).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "Driver",
    "exit_status",
    "log_tail",
    "pid_alive",
    "pid_of",
    "session_members",
    "signal_group",
    "spawn",
]

Driver = subprocess.Popen[bytes] | int
"""A driver process: our child, or the pid of one started by an earlier service process."""


def spawn(cmd: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session (so it outlives the service and its process group can
    be signalled as one), stdin closed, stdout and stderr appended to ``log_path``."""
    with open(log_path, "ab") as logf:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )


def pid_of(driver: Driver) -> int:
    return driver if isinstance(driver, int) else driver.pid


def exit_status(driver: Driver, job_id: str) -> tuple[bool, int | None]:
    """``(gone, returncode)``: whether the driver has ended, and its exit status when it was
    our child (None for an adopted pid, whose status only its parent could read)."""
    if isinstance(driver, int):
        return (not pid_alive(driver, job_id), None)
    returncode = driver.poll()
    return (returncode is not None, returncode)


def pid_alive(pid: int, job_id: str) -> bool:
    """True when ``pid`` runs and is this job's driver (guards against pid reuse)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it is our own zombie child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return job_id.encode() in (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return False
    return True


def session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (Linux /proc; empty elsewhere)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def signal_group(pid: int, sig: int) -> None:
    """Signal the driver's process group; SIGKILL also reaches every process of its session
    (the driver is a session leader), e.g. a local Ray node in process groups of its own."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    if sig == signal.SIGKILL:
        for member in session_members(pid):
            try:
                os.kill(member, sig)
            except (ProcessLookupError, PermissionError):
                pass


def log_tail(path: Path, *, lines: int = 40, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a text file (empty string when missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
