"""Run the control plane under uvicorn: in the foreground (``bioprop serve``) or in a thread
(``bioprop demo``, tests)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from service.api.app import create_app
from service.api.connections import bounded_protocol
from service.core.settings import Settings

__all__ = ["ServerThread", "free_port", "serve", "uvicorn_options"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What bounds a connection: the h11 parser (httptools has no header limit) refusing a
    request line plus headers over ``MAX_HEADER_BYTES`` that arrive in pieces (400, nothing
    buffered past it; :class:`service.api.connections.RequestBounds` answers 431 to those that
    arrive at once), header and body read timeouts and a per-client connection cap
    (:func:`service.api.connections.bounded_protocol`), and, on SIGTERM, ``SHUTDOWN_GRACE_S``
    for open requests (log follows) before they are cancelled, so a stop is prompt
    whatever clients hold."""
    return {
        "http": bounded_protocol(settings),
        "h11_max_incomplete_event_size": settings.MAX_HEADER_BYTES,
        "timeout_graceful_shutdown": settings.SHUTDOWN_GRACE_S,
    }


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = True,
    rebuild_store: bool = False,
) -> None:
    uvicorn.run(
        create_app(settings, rebuild_store=rebuild_store),
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        **uvicorn_options(settings),
    )


class ServerThread:
    """uvicorn serving ``create_app(settings)`` on ``host:port`` in a daemon thread."""

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int | None = None):
        self.settings = settings
        self.host = host
        self.port = port or free_port(host)
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(settings),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bioprop-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
