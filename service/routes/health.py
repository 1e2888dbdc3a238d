"""``GET /healthz``: liveness plus queue counts (no auth)."""

from __future__ import annotations

from fastapi import APIRouter

from service import store
from service.deps import ConnDep
from service.schemas import Health
from service.store import ACTIVE_STATES, JobState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness and queue counts")
async def healthz(conn: ConnDep) -> Health:
    return Health(
        jobs_active=store.count_jobs(conn=conn, states=ACTIVE_STATES),
        jobs_pending=store.count_jobs(conn=conn, states=[JobState.PENDING]),
    )
