"""``GET /healthz``: liveness plus queue counts (no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import Connection

from service import store
from service.deps import SettingsDep
from service.resources import held
from service.schemas import Health, responses
from service.settings import Settings
from service.store import JobState

router = APIRouter(tags=["health"])


def _health(*, conn: Connection, settings: Settings) -> Health:
    active = store.active_jobs(conn=conn)
    used = held((job.spec for job in active), settings.cluster())
    return Health(
        jobs_active=len(active),
        jobs_pending=store.count_jobs(conn=conn, states=[JobState.PENDING]),
        cpus_in_use=used.cpus,
        gpus_in_use=used.gpus,
        cpus_total=settings.CLUSTER_CPUS,
        gpus_total=settings.CLUSTER_GPUS,
    )


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness, queue counts, resources in use",
    responses=responses(503),
)
async def healthz(request: Request, settings: SettingsDep) -> Health:
    """Reads the store through a connection of its own (``app.state.health_store``): a
    saturated API makes this slow or 503, never queued behind the API's requests."""
    return await request.app.state.health_store.run(_health, settings=settings)
