"""FastAPI dependencies: settings, the job store (:class:`service.core.db.Store`), the job of a
path (or 404), scheduler, bearer-token auth and who it identifies."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.core import store
from service.core.db import Store
from service.core.group_commit import GroupCommit
from service.core.principals import LOCAL, Principal, TokenTable
from service.core.progress import ProgressReader
from service.core.scheduler import Scheduler
from service.core.settings import Settings
from service.core.store import Job
from trainers.contracts import JOB_ID

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


def no_such_job(job_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")


def token_ok(given: str, tokens: list[bytes]) -> bool:
    """Compare ``given`` with every configured token in constant time (no early exit)."""
    raw = given.encode()
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(raw, token)
    return ok


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """401 unless the request carries a configured token; returns who it is
    (:mod:`service.core.principals`): its name owns what it submits, its role says whose jobs
    it sees, its scope keeps its Idempotency-Keys apart from everyone else's. With no
    tokens configured every caller is :data:`LOCAL`."""
    table: TokenTable = request.app.state.tokens
    if table.open:
        return LOCAL
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = table.identify(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


Auth = Depends(require_token)
PrincipalDep = Annotated[Principal, Depends(require_token)]


async def get_job(job_id: str, db: StoreDep, principal: PrincipalDep) -> Job:
    """The job named by the path's ``job_id``; 404 when there is none or it is another
    principal's and the caller is no admin (the same answer: a user cannot tell others'
    job ids from unused ones), at once for a string no job id can be (e.g. with a NUL
    that PostgreSQL would refuse). Read in a worker thread; no connection is held while
    the endpoint runs (it may await MLflow or stream)."""
    job = await db.run(store.get_job, job_id=job_id) if JOB_ID.match(job_id) else None
    if job is None or not principal.sees(job.owner):
        raise no_such_job(job_id)
    return job


JobDep = Annotated[Job, Depends(get_job)]
