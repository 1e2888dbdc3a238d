"""The FastAPI control plane: ``create_app(settings)`` wires store, scheduler and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from service import store
from service.progress import ProgressReader
from service.routes import experiments, health
from service.scheduler import Scheduler
from service.settings import Settings

__all__ = ["BodySizeLimit", "create_app"]

log = logging.getLogger(__name__)

DESCRIPTION = """\
Submit bioprop experiment specs (one rule or a sweep of rules), follow them, cancel them,
and read their metrics from MLflow. Each job runs as one driver process that connects to
the Ray cluster; a bearer token is required when `BIOPROP_API_TOKENS` is set.
"""


class BodySizeLimit:
    """ASGI middleware: 413 when a request body exceeds ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await too_big(scope, receive, send)
                    return
        # read the body up front (it is small by construction), refusing it past the bound
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await too_big(scope, receive, send)
                return
        first = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay(first, receive), send)


def _replay(first: dict, receive: Any) -> Any:
    """A ``receive`` that returns ``first`` once, then defers to the real one."""
    pending = [first]

    async def replay() -> dict:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def create_app(settings: Settings | None = None) -> FastAPI:
    """The control-plane app; the scheduler starts and stops with the app's lifespan."""
    settings = settings or Settings()
    settings.RUN_DIR.mkdir(parents=True, exist_ok=True)
    engine = store.make_engine(settings.DB_URL)
    sessions = store.make_sessionmaker(engine)
    scheduler = Scheduler(settings, sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.API_TOKENS:
            log.warning("no BIOPROP_API_TOKENS set: the API is open (local use only)")
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            engine.dispose()

    app = FastAPI(
        title="bioprop control plane",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.scheduler = scheduler
    app.state.progress = ProgressReader(settings.MLFLOW_URI)
    app.include_router(experiments.router, prefix="/v1")
    app.include_router(health.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.MAX_BODY_BYTES)
    return app
