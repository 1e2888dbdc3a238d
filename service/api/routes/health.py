"""``GET /healthz``: liveness plus queue counts (no auth)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from sqlalchemy import Connection

from service.api.schemas import Health, responses
from service.core import store
from service.core.resources import Resources, held
from service.core.store import JobState

router = APIRouter(tags=["health"])


def _health(*, conn: Connection, total: Resources, source: str) -> Health:
    active = store.active_jobs(conn=conn)
    used = held((job.spec for job in active), total)
    return Health(
        jobs_active=len(active),
        jobs_pending=store.count_jobs(conn=conn, states=[JobState.PENDING]),
        cpus_in_use=used.cpus,
        gpus_in_use=used.gpus,
        cpus_total=None if math.isinf(total.cpus) else total.cpus,
        gpus_total=None if math.isinf(total.gpus) else total.gpus,
        capacity_from=source,
    )


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness, queue counts, resources in use",
    responses=responses(503),
)
async def healthz(request: Request) -> Health:
    """Reads the store through a connection of its own (``app.state.health_store``): a
    saturated API makes this slow or 503, never queued behind the API's requests."""
    total, source = request.app.state.scheduler.known_capacity()
    return await request.app.state.health_store.run(_health, total=total, source=source)
