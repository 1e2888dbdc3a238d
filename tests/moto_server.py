"""moto's S3 server for the tests that need an S3 endpoint (imported by test modules and
``tests/conftest.py``; not a conftest, whose module name several folders share)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free 127.0.0.1 port (``env`` added to its environment, e.g.
    ``INITIAL_NO_AUTH_ACTION_COUNT`` to check signatures); the process and its URL, once it
    answers."""
    pytest.importorskip("moto", reason="moto[server] (dev extra) is not installed")
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
