"""``/v1/experiments``: submit, list, get, cancel, logs and metrics of experiment jobs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from service import logstream, store
from service.admission import admit
from service.deps import (
    Auth,
    ConnDep,
    GroupCommitDep,
    JobDep,
    ProgressDep,
    SchedulerDep,
    SettingsDep,
)
from service.ray_jobs import RayJobsScheduler, logs_response
from service.schemas import DEMO_SPEC_EXAMPLE, CancelResult, JobList, JobPublic, Metrics
from service.store import JobState, is_final
from trainers.spec import ExperimentSpec

router = APIRouter(prefix="/experiments", tags=["experiments"], dependencies=[Auth])
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


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    summary="Submit an experiment or sweep",
    responses={
        200: {"description": "Replay: the job first created with this Idempotency-Key"},
        401: {"description": "Missing or invalid bearer token"},
        413: {"description": "Request body too large"},
        422: {
            "description": "Invalid spec (names the field path), disallowed data root, "
            "or an Idempotency-Key reused with a different body"
        },
    },
)
async def submit(
    spec: Annotated[ExperimentSpec, Body(openapi_examples=_SPEC_EXAMPLES)],
    writer: GroupCommitDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="a retried submission with the same key returns the original job",
        ),
    ] = None,
) -> Response:
    admit(spec, settings)
    spec_json = spec.model_dump(mode="json")
    # the hash only serves to compare a replay with the first body
    digest = body_hash(spec_json) if idempotency_key is not None else None
    job, created = await writer.create_job(
        store.NewJob(spec.name, spec_json, idempotency_key, digest)
    )
    headers = {"Location": f"/v1/experiments/{job.id}"}
    if not created:
        if job.body_hash != digest:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "Idempotency-Key was already used with a different request body",
            )
        headers["Idempotent-Replayed"] = "true"
    return _json(
        JobPublic.from_job(job),
        status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        headers,
    )


@router.get("", response_model=JobList, summary="List jobs, newest first")
async def list_experiments(
    conn: ConnDep,
    state: Annotated[list[JobState] | None, Query(description="filter; repeat for several")] = None,
    name: Annotated[str | None, Query(description="exact spec name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    jobs, total = store.list_jobs(conn=conn, states=state, name=name, limit=limit, offset=offset)
    return JobList(
        items=[JobPublic.from_job(j) for j in jobs], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    summary="One job, with progress from MLflow",
    responses={404: {"description": "No such job"}},
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
    reason = scheduler.pending_reason(job.id) if job.state is JobState.PENDING else None
    return _json(JobPublic.from_job(job, progress=summary, pending_reason=reason))


@router.post(
    "/{job_id}/cancel",
    response_model=CancelResult,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a job (SIGTERM to its driver, SIGKILL after the grace period or with force)",
    responses={404: {"description": "No such job"}, 409: {"description": "Already finished"}},
)
def cancel_experiment(
    job_id: str,
    scheduler: SchedulerDep,
    force: Annotated[bool, Query(description="kill now instead of a graceful stop")] = False,
) -> CancelResult:
    state = scheduler.cancel(job_id, force=force)
    if state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    if state in (JobState.SUCCEEDED, JobState.FAILED):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {state.value}")
    return CancelResult(id=job_id, state=state)


@router.get(
    "/{job_id}/logs",
    summary="The driver log: its tail, or followed until the job ends",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"example": "epoch 1 val_acc 0.62\n"}}},
        404: {"description": "No such job"},
    },
)
def get_logs(
    job: JobDep,
    request: Request,
    scheduler: SchedulerDep,
    tail: Annotated[int | None, Query(ge=1, le=100000, description="last N lines")] = None,
    follow: Annotated[bool, Query(description="stream new lines until the job ends")] = False,
) -> Response:
    if isinstance(scheduler, RayJobsScheduler) and job.started_at and not is_final(job.state):
        return logs_response(scheduler.ray, job.id, tail, follow)  # from Ray while it runs
    path = scheduler.job_dir(job.id) / "driver.log"
    text, size = logstream.snapshot(path, tail)
    if not follow:
        return PlainTextResponse(text)
    engine = request.app.state.engine

    def state() -> JobState | None:
        with engine.connect() as conn:
            fresh = store.get_job(conn=conn, job_id=job.id)
            return fresh.state if fresh else None

    async def finished() -> bool:
        fresh = await run_in_threadpool(state)
        return fresh is None or is_final(fresh)

    async def stream() -> AsyncIterator[bytes]:
        if text:
            yield text.encode()
        async for chunk in logstream.follow(
            path,
            size,
            finished=finished,
            disconnected=request.is_disconnected,
            poll_s=request.app.state.settings.POLL_INTERVAL_S,
        ):
            yield chunk

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


@router.get(
    "/{job_id}/metrics",
    response_model=Metrics,
    summary="Per-rule metrics of a job read from MLflow",
    responses={404: {"description": "No such job"}},
)
def get_metrics(job: JobDep, progress: ProgressDep) -> Metrics:
    summary = progress.read(job.id, final=is_final(job.state)) if job.started_at else None
    summary = summary or {}
    return Metrics(
        job_id=job.id,
        state=job.state,
        parent_run_id=summary.get("parent_run_id") or job.mlflow_parent_run_id,
        children=summary.get("children", []),
    )
