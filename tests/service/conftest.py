"""Fixtures: service settings rooted in tmp_path, a live uvicorn server on 127.0.0.1 (in a
thread, or ``bioprop serve`` as a subprocess), and the fake driver standing in for
``trainers.launch``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import ServeProcess, make_settings

from service.api.server import ServerThread
from service.core.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "runs")


@pytest.fixture
def start_server() -> Iterator[Callable[[Settings], ServerThread]]:
    servers: list[ServerThread] = []

    def start(settings: Settings) -> ServerThread:
        server = ServerThread(settings).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(settings: Settings, start_server: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_server(settings)


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def start_serve() -> Iterator[Callable[..., ServeProcess]]:
    """Start ``bioprop serve`` subprocesses (``start(run_dir, **settings)``); each is sent
    SIGTERM at teardown."""
    procs: list[ServeProcess] = []

    def start(run_dir: Path, **settings: object) -> ServeProcess:
        proc = ServeProcess(run_dir, **settings).start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            proc.stop()
        except AssertionError:
            pass
