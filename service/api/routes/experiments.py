"""``/v1/experiments``: submit, list, get, cancel, logs, metrics and report of experiment jobs.

Handlers only: admission policy is :mod:`service.core.admission`, log reading
:mod:`service.core.logstream`, and every job-store access goes through
:class:`service.core.db.Store` (worker threads, bounded wait, 503 when the store is saturated),
so nothing here blocks the event loop.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Body,
    Depends,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Connection

from service.api.deps import (
    Auth,
    GroupCommitDep,
    JobDep,
    PrincipalDep,
    ProgressDep,
    SchedulerDep,
    SettingsDep,
    StoreDep,
    no_such_job,
)
from service.api.schemas import (
    DEMO_SPEC_EXAMPLE,
    CancelResult,
    JobList,
    JobPublic,
    Metrics,
    responses,
)
from service.api.strict_json import StrictJSONRoute
from service.core import logstream, store
from service.core.admission import admit
from service.core.store import JobState, is_final
from trainers.spec import ExperimentSpec

router = APIRouter(
    route_class=StrictJSONRoute,
    prefix="/experiments",
    tags=["experiments"],
    dependencies=[Auth],
    responses=responses(401, 503),
)

SPEC_PAGE = 20  # jobs per page when the list carries their specs (each up to MAX_BODY_BYTES)
MAX_OFFSET = 2**31 - 1

_SPEC_EXAMPLES = {
    "sweep": {
        "summary": "bp / fa / ss sweep on synthetic data (the demo)",
        "value": DEMO_SPEC_EXAMPLE,
    },
    "imagenet": {
        "summary": "ResNet-18 with sign-symmetry on an ImageNet folder",
        "value": {
            "name": "resnet18-ss-imagenet",
            "model": "resnet18",
            "data": {"kind": "imagefolder", "root": "/data/imagenet", "image_size": 224},
            "rule": {"name": "ss", "last_layer": "bp"},
            "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
            "schedule": {"epochs": 90, "step_every": 30, "gamma": 0.1},
            "batch_size": 256,
            "scale": {"workers": 8, "gpu": True, "cpus_per_worker": 8},
        },
    },
}


def _json(model: BaseModel, status_code: int = 200, headers: dict | None = None) -> Response:
    """``model`` as the JSON response. Returning the model itself makes FastAPI dump it,
    validate the dump against ``response_model`` and serialize it again (on the submit path
    about 0.3 of its 1.6 ms of server CPU, ``bioprop bench service``). ``response_model``
    still documents the answer in OpenAPI."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")


def body_hash(spec_json: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()


def scoped_key(scope: str, key: str) -> str:
    """The stored form of an Idempotency-Key: the key itself on an open API, else a digest
    of the caller's scope (its principal's name; a bare token's digest) and the key, so one
    principal's keys never meet another's."""
    if not scope:
        return key
    return hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()


async def require_json(
    content_type: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """415 unless the body is declared JSON (``application/json`` or ``+json``)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"the spec must be sent as application/json, not {media or 'no content type'!r}",
        )


def _idempotency_reused(key: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "idempotency_key_reused",
                "loc": ("header", "Idempotency-Key"),
                "msg": "Idempotency-Key was already used with a different request body",
                "input": key,
            }
        ]
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    summary="Submit an experiment or sweep",
    dependencies=[Depends(require_json)],
    responses={
        200: {
            "model": JobPublic,
            "description": "Replay: the job first created with this Idempotency-Key",
        },
        **responses(400, 413, 415),
        422: {
            "description": "Invalid spec (names the field path), a sweep larger than "
            "BIOPROP_MAX_SWEEP_SETTINGS, a disallowed path, or an Idempotency-Key reused "
            "with a different body"
        },
    },
)
async def submit(
    spec: Annotated[ExperimentSpec, Body(openapi_examples=_SPEC_EXAMPLES)],
    writer: GroupCommitDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    priority: Annotated[
        int,
        Query(
            ge=-100,
            le=100,
            description="order among the caller's own PENDING jobs (higher first; equal: "
            "oldest first); never ahead of another principal's fair share",
        ),
    ] = 0,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="a retried submission with the same key (from the same token) "
            "returns the original job; visible ASCII, 1-255 characters",
        ),
    ] = None,
) -> Response:
    spec, data_root = admit(spec, settings)
    spec_json = spec.model_dump(mode="json")
    key = scoped_key(principal.scope, idempotency_key) if idempotency_key is not None else None
    # the hash only serves to compare a replay with the first body
    digest = body_hash(spec_json) if key is not None else None
    new = store.NewJob(spec.name, spec_json, key, digest, principal.name, data_root, priority)
    job, created = await writer.create_job(new)
    headers = {"Location": f"/v1/experiments/{job.id}"}
    if not created:
        if job.body_hash != digest:
            raise _idempotency_reused(idempotency_key or "")
        headers["Idempotent-Replayed"] = "true"
    return _json(
        JobPublic.from_job(job),
        status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        headers,
    )


def _page(
    *,
    conn: Connection,
    states: list[JobState] | None,
    name: str | None,
    owner: str | None,
    limit: int,
    offset: int,
    with_spec: bool,
) -> bytes:
    """One list page, serialized in the worker thread (pages can be large)."""
    jobs, total = store.list_jobs(
        conn=conn,
        states=states,
        name=name,
        owner=owner,
        limit=limit,
        offset=offset,
        with_spec=with_spec,
    )
    page = JobList(
        items=[JobPublic.from_job(j) for j in jobs], total=total, limit=limit, offset=offset
    )
    return page.model_dump_json().encode()


@router.get(
    "",
    response_model=JobList,
    summary="List jobs, newest first (a user's own; an admin's all, or one owner's)",
    responses=responses(403),
)
async def list_experiments(
    db: StoreDep,
    principal: PrincipalDep,
    owner: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$",
            description="only this principal's jobs (an admin's filter; a user sees only "
            "its own, and naming another answers 403)",
        ),
    ] = None,
    state: Annotated[list[JobState] | None, Query(description="filter; repeat for several")] = None,
    name: Annotated[
        str | None,
        Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="exact spec name"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    include: Annotated[
        Literal["spec"] | None,
        Query(description=f"spec: include each job's spec (pages of at most {SPEC_PAGE})"),
    ] = None,
) -> Response:
    with_spec = include == "spec"
    if with_spec:
        limit = min(limit, SPEC_PAGE)
    if not principal.admin:
        if owner is not None and owner != principal.name:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "only an admin may list another principal's jobs"
            )
        owner = principal.name
    body = await db.run(
        _page,
        states=state,
        name=name,
        owner=owner,
        limit=limit,
        offset=offset,
        with_spec=with_spec,
    )
    return Response(body, media_type="application/json")


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="One job, with progress from MLflow",
    responses=responses(404),
)
async def get_experiment(
    job: JobDep,
    progress: ProgressDep,
    scheduler: SchedulerDep,
    with_progress: Annotated[
        bool, Query(alias="progress", description="include per-rule progress read from MLflow")
    ] = True,
) -> Response:
    summary = None
    if with_progress and job.started_at is not None:
        final = is_final(job.state)
        summary = progress.cached(job.id, final=final)
        if summary is progress.MISS:  # MLflow reads may be slow: keep them off the event loop
            summary = await run_in_threadpool(progress.read, job.id, final=final)
    reason = (
        scheduler.pending_reason(job.id, owner=job.owner) if job.state is JobState.PENDING else None
    )
    return _json(JobPublic.from_job(job, progress=summary, pending_reason=reason))


@router.post(
    "/{job_id}/cancel",
    response_model=CancelResult,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a job (SIGTERM to its driver, SIGKILL after the grace period or with force)",
    responses=responses(404, 409),
)
async def cancel_experiment(
    job: JobDep,
    db: StoreDep,
    scheduler: SchedulerDep,
    force: Annotated[bool, Query(description="kill now instead of a graceful stop")] = False,
) -> CancelResult:
    job_id = job.id  # JobDep: 404 unless the caller sees the job
    state = await db.call(scheduler.cancel, job_id, force=force)
    if state is None:
        raise no_such_job(job_id)
    if state in (JobState.SUCCEEDED, JobState.FAILED):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {state.value}")
    return CancelResult(id=job_id, state=state)


@router.get(
    "/{job_id}/logs",
    summary="The driver log: its tail, or followed until the job ends",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"example": "epoch 1 val_acc 0.62\\n"}}},
        **responses(404),
    },
)
async def get_logs(
    job: JobDep,
    request: Request,
    db: StoreDep,
    scheduler: SchedulerDep,
    settings: SettingsDep,
    tail: Annotated[int | None, Query(ge=1, le=100000, description="last N lines")] = None,
    follow: Annotated[
        bool,
        Query(
            description="stream new output until the job ends; a '[bioprop] ...' status line "
            "after FOLLOW_HEARTBEAT_S without output, the stream closed after FOLLOW_IDLE_S"
        ),
    ] = False,
) -> Response:
    # the backend's own log while it serves one (a running Ray job's, read in a worker
    # thread); else the driver.log on this host
    served = await run_in_threadpool(
        functools.partial(
            scheduler.backend.logs,
            job,
            tail=tail,
            follow=follow,
            heartbeat_s=settings.FOLLOW_HEARTBEAT_S,
            idle_s=settings.FOLLOW_IDLE_S,
        )
    )
    if served is not None:
        return served
    path = scheduler.job_dir(job.id) / "driver.log"
    size = await run_in_threadpool(logstream.size_of, path)  # follow from here: nothing lost
    head = await run_in_threadpool(logstream.tail_text, path, tail) if tail is not None else None

    async def status_words() -> tuple[bool, str]:
        fresh = await db.run(store.get_job, job_id=job.id)
        if fresh is None:
            return True, ""
        words = f"job {job.id} is {fresh.state.value}"
        if fresh.state is JobState.PENDING:
            reason = scheduler.pending_reason(job.id, owner=job.owner)
            words += f": {reason}" if reason else ""
        return is_final(fresh.state), words

    async def stream() -> AsyncIterator[bytes]:
        if head is not None:
            if head:
                yield head.encode()
        else:
            async for chunk in logstream.read_range(path, 0, size):
                yield chunk
        if follow:
            async for chunk in logstream.follow(
                path,
                size,
                status=status_words,
                disconnected=request.is_disconnected,
                poll_s=settings.POLL_INTERVAL_S,
                heartbeat_s=settings.FOLLOW_HEARTBEAT_S,
                idle_s=settings.FOLLOW_IDLE_S,
            ):
                yield chunk

    if head is not None and not follow:
        return PlainTextResponse(head)
    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


@router.get(
    "/{job_id}/metrics",
    response_model=Metrics,
    summary="Per-rule metrics of a job read from MLflow",
    responses=responses(404),
)
async def get_metrics(job: JobDep, progress: ProgressDep) -> Metrics:
    summary = None
    if job.started_at:
        summary = await run_in_threadpool(progress.read, job.id, final=is_final(job.state))
    summary = summary or {}
    return Metrics(
        job_id=job.id,
        state=job.state,
        parent_run_id=summary.get("parent_run_id") or job.mlflow_parent_run_id,
        children=summary.get("children", []),
    )


@router.get(
    "/{job_id}/report",
    summary="The sweep's comparison report, read from MLflow now (a self-contained HTML page)",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {"example": "<!doctype html><html>...</html>"}}},
        **responses(404),
        409: {**responses(409)[409], "description": "The job has no runs in MLflow yet"},
    },
)
async def get_report(job: JobDep, progress: ProgressDep) -> HTMLResponse:
    """The page ``trainers.report`` writes as the parent run's ``sweep_report.html``: the
    per-setting table (sortable), headline metric and mean angle per epoch, angle against
    depth."""
    from trainers.summary import job_report

    page = None
    if job.started_at and await run_in_threadpool(progress.read, job.id, final=False):
        page = await run_in_threadpool(job_report, job.id, progress.tracking_uri)
    if page is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"job {job.id} has no runs in MLflow yet ({job.state.value})"
        )
    return HTMLResponse(page)
