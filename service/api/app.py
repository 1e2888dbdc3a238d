"""The FastAPI control plane: ``create_app(settings)`` wires store, scheduler and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import errors
from service.api.connections import RequestBounds
from service.api.routes import experiments, health
from service.backends.ray_jobs import make_scheduler
from service.core import store, store_check
from service.core.db import Store
from service.core.group_commit import GroupCommit
from service.core.progress import ProgressReader
from service.core.settings import Settings
from trainers.plugins import load_plugins

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DESCRIPTION = """\
Submit bioprop experiment specs (one rule or a sweep of rules), follow them, cancel them,
and read their metrics from MLflow. Each job runs as one driver process that connects to
the Ray cluster; a bearer token is required when `BIOPROP_API_TOKENS` is set.
"""


def create_app(settings: Settings | None = None, *, rebuild_store: bool = False) -> FastAPI:
    """The control-plane app; the scheduler starts and stops with the app's lifespan.

    The job store is checked first (:func:`service.core.store_check.check_store`: raises
    :class:`~service.core.store_check.StoreRefused` on a missing, empty or corrupt store beside
    job folders) or, with ``rebuild_store``, rebuilt from the job folders."""
    settings = settings or Settings()
    load_plugins()  # a plugin that cannot be imported stops the start, named
    settings.RUN_DIR.mkdir(parents=True, exist_ok=True)
    if rebuild_store:
        store_check.rebuild_store(settings)
    else:
        store_check.check_store(settings)
    engine = store.make_engine(
        settings.DB_URL, pool_size=settings.STORE_POOL_SIZE, pool_timeout=settings.STORE_TIMEOUT_S
    )
    # the scheduler thread and /healthz have one connection each, so liveness never queues
    # behind API traffic; requests share the rest (service.core.db)
    db = Store(engine, slots=settings.STORE_POOL_SIZE - 2, timeout_s=settings.STORE_TIMEOUT_S)
    health_db = Store(engine, slots=1, timeout_s=settings.STORE_TIMEOUT_S)
    scheduler = make_scheduler(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.open_api:
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
        max_body_size=settings.MAX_BODY_BYTES,  # 413 past it, declared or streamed
    )
    app.state.settings = settings
    app.state.tokens = settings.token_table()
    app.state.engine = engine
    app.state.store = db
    app.state.health_store = health_db
    app.state.scheduler = scheduler
    app.state.group_commit = GroupCommit(db, on_created=scheduler.wake)
    app.state.progress = ProgressReader(settings.MLFLOW_URI)
    errors.install(app)
    app.add_middleware(
        RequestBounds,
        max_header_bytes=settings.MAX_HEADER_BYTES,
        allowed_hosts=settings.ALLOWED_HOSTS if settings.open_api else None,
    )
    app.include_router(experiments.router, prefix="/v1")
    app.include_router(health.router)
    return app
