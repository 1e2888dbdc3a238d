"""``GET /healthz``: liveness plus queue counts (no auth)."""

from __future__ import annotations

from fastapi import APIRouter

from service import store
from service.deps import ConnDep, SettingsDep
from service.resources import held
from service.schemas import Health
from service.store import JobState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness, queue counts, resources in use")
async def healthz(conn: ConnDep, settings: SettingsDep) -> Health:
    active = store.active_jobs(conn=conn)
    used = held(job.spec for job in active)
    return Health(
        jobs_active=len(active),
        jobs_pending=store.count_jobs(conn=conn, states=[JobState.PENDING]),
        cpus_in_use=used.cpus,
        gpus_in_use=used.gpus,
        cpus_total=settings.CLUSTER_CPUS,
        gpus_total=settings.CLUSTER_GPUS,
    )
