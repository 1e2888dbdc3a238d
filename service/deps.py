"""FastAPI dependencies: settings, store connections, the job of a path (or 404), scheduler,
bearer-token auth."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection

from service import store
from service.group_commit import GroupCommit
from service.progress import ProgressReader
from service.scheduler import Scheduler
from service.settings import Settings
from service.store import Job

__all__ = [
    "Auth",
    "ConnDep",
    "GroupCommitDep",
    "JobDep",
    "ProgressDep",
    "SchedulerDep",
    "SettingsDep",
]

_bearer = HTTPBearer(auto_error=False, description="a token from BIOPROP_API_TOKENS")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_conn(request: Request) -> AsyncIterator[Connection]:
    """A job-store connection for one endpoint call, closed when the endpoint returns
    (``scope="function"``), before the response is sent.

    Async on purpose: sync dependencies each cost a threadpool hop per request. The contract
    for async endpoints: never ``await`` while holding the connection (close it first), else
    requests in flight exhaust the pool and the next checkout blocks the event loop itself.
    """
    with request.app.state.engine.connect() as conn:
        yield conn


async def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


async def get_group_commit(request: Request) -> GroupCommit:
    return request.app.state.group_commit


async def get_progress(request: Request) -> ProgressReader:
    return request.app.state.progress


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[Connection, Depends(get_conn, scope="function")]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
GroupCommitDep = Annotated[GroupCommit, Depends(get_group_commit)]
ProgressDep = Annotated[ProgressReader, Depends(get_progress)]


async def get_job(job_id: str, request: Request) -> Job:
    """The job named by the path's ``job_id``; 404 when there is none. The connection goes
    back to the pool before the endpoint runs (it may await MLflow or stream)."""
    with request.app.state.engine.connect() as conn:
        job = store.get_job(conn=conn, job_id=job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
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
) -> None:
    tokens = settings.token_values()
    if not tokens:
        return
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


Auth = Depends(require_token)
