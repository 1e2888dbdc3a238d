"""FastAPI dependencies: settings, the job store (:class:`service.db.Store`), the job of a
path (or 404), scheduler, bearer-token auth and who it identifies."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service import store
from service.db import Store
from service.group_commit import GroupCommit
from service.progress import ProgressReader
from service.scheduler import Scheduler
from service.settings import Settings
from service.store import Job

__all__ = [
    "Auth",
    "GroupCommitDep",
    "JOB_ID",
    "JobDep",
    "PrincipalDep",
    "ProgressDep",
    "SchedulerDep",
    "SettingsDep",
    "StoreDep",
    "no_such_job",
]

_bearer = HTTPBearer(auto_error=False, description="a token from BIOPROP_API_TOKENS")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


async def get_group_commit(request: Request) -> GroupCommit:
    return request.app.state.group_commit


async def get_progress(request: Request) -> ProgressReader:
    return request.app.state.progress


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
GroupCommitDep = Annotated[GroupCommit, Depends(get_group_commit)]
ProgressDep = Annotated[ProgressReader, Depends(get_progress)]


JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def no_such_job(job_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")


async def get_job(job_id: str, db: StoreDep) -> Job:
    """The job named by the path's ``job_id``; 404 when there is none (at once for a string
    no job id can be, e.g. with a NUL that PostgreSQL would refuse). Read in a worker
    thread; no connection is held while the endpoint runs (it may await MLflow or stream)."""
    job = await db.run(store.get_job, job_id=job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise no_such_job(job_id)
    return job


JobDep = Annotated[Job, Depends(get_job)]


def token_ok(given: str, tokens: list[bytes]) -> bool:
    """Compare ``given`` with every configured token in constant time (no early exit)."""
    raw = given.encode()
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(raw, token)
    return ok


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """401 unless the request carries one of the configured tokens; returns the caller's
    principal: a digest of its token ("" when the API is open), which scopes what belongs
    to a caller (its Idempotency-Keys) without keeping the token itself."""
    tokens = settings.token_values()
    if not tokens:
        return ""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not token_ok(credentials.credentials, tokens):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return hashlib.sha256(credentials.credentials.encode()).hexdigest()[:32]


Auth = Depends(require_token)
PrincipalDep = Annotated[str, Depends(require_token)]
