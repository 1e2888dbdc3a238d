"""Fixtures: service settings rooted in tmp_path, a live uvicorn server on 127.0.0.1, and the
fake driver standing in for ``trainers.launch``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import make_settings

from service.server import ServerThread
from service.settings import Settings


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
