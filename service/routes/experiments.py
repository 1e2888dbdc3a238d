"""``/v1/experiments``: submit, list, get, cancel, logs and metrics of experiment jobs."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from service import store
from service.deps import Auth, ConnDep, GroupCommitDep, ProgressDep, SchedulerDep, SettingsDep
from service.resources import shortfall
from service.scheduler import log_tail
from service.schemas import DEMO_SPEC_EXAMPLE, CancelResult, JobList, JobPublic
from service.settings import Settings
from service.store import FINAL_STATES, JobState
from trainers.spec import ExperimentSpec
from trainers.storage import is_uri

router = APIRouter(prefix="/experiments", tags=["experiments"], dependencies=[Auth])

_FINAL = {s.value for s in FINAL_STATES}
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


def _not_found(job_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_data_dirs(spec: ExperimentSpec, settings: Settings) -> None:
    """422 unless ``data.root`` lies under one of ``settings.DATA_DIRS`` and a local
    ``storage_path`` under one of them or ``RUN_DIR`` (checked only when DATA_DIRS is
    configured; a URI such as ``s3://bucket/prefix`` is object storage, not a local path)."""
    if not settings.DATA_DIRS:
        return
    allowed = ", ".join(str(d) for d in settings.DATA_DIRS)
    errors = []
    if spec.data.root is not None:
        root = Path(spec.data.root).expanduser().resolve()
        if not _under(root, settings.DATA_DIRS):
            errors.append(
                {
                    "type": "path_not_allowed",
                    "loc": ("body", "data", "root"),
                    "msg": f"data.root {str(root)!r} is not under an allowed data directory "
                    f"({allowed})",
                    "input": str(spec.data.root),
                }
            )
    if spec.storage_path is not None and not is_uri(spec.storage_path):
        storage = Path(spec.storage_path).expanduser().resolve()
        if not _under(storage, [*settings.DATA_DIRS, settings.RUN_DIR]):
            errors.append(
                {
                    "type": "path_not_allowed",
                    "loc": ("body", "storage_path"),
                    "msg": f"storage_path {str(storage)!r} is not under an allowed data "
                    f"directory ({allowed}) or the run directory ({settings.RUN_DIR})",
                    "input": str(spec.storage_path),
                }
            )
    if errors:
        raise RequestValidationError(errors)


def check_tracking(spec: ExperimentSpec, settings: Settings) -> None:
    """422 when the spec names an MLflow store other than the service's: progress, metrics
    and the runs' job tags must land where the service reads them."""
    uri = spec.tracking.uri
    if uri is not None and uri != settings.MLFLOW_URI:
        raise RequestValidationError(
            [
                {
                    "type": "tracking_uri_not_allowed",
                    "loc": ("body", "tracking", "uri"),
                    "msg": "this service records runs in its own MLflow store "
                    f"({settings.MLFLOW_URI}); leave tracking.uri unset",
                    "input": uri,
                }
            ]
        )


def check_resources(spec: ExperimentSpec, settings: Settings) -> None:
    """422 when the job needs more CPUs or GPUs than the whole cluster has (it would wait
    PENDING forever); checked only when ``CLUSTER_CPUS``/``CLUSTER_GPUS`` are set."""
    if settings.CLUSTER_CPUS is None and settings.CLUSTER_GPUS is None:
        return
    problems = shortfall(spec.scale, settings.cluster())
    if problems:
        raise RequestValidationError(
            [
                {
                    "type": "exceeds_cluster",
                    "loc": ("body", "scale", field),
                    "msg": msg,
                    "input": getattr(spec.scale, field),
                }
                for field, msg in problems
            ]
        )


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
    check_data_dirs(spec, settings)
    check_tracking(spec, settings)
    check_resources(spec, settings)
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


@router.get("/{job_id}", response_model=JobPublic, summary="One job, with progress from MLflow")
async def get_experiment(
    job_id: str,
    conn: ConnDep,
    progress: ProgressDep,
    scheduler: SchedulerDep,
    with_progress: Annotated[
        bool, Query(alias="progress", description="include per-rule progress read from MLflow")
    ] = True,
) -> Response:
    job = store.get_job(conn=conn, job_id=job_id)
    conn.close()  # give the connection back before awaiting MLflow (see deps.get_conn)
    if job is None:
        raise _not_found(job_id)
    summary = None
    if with_progress and job.started_at is not None:
        final = job.state in _FINAL
        summary = progress.cached(job.id, final=final)
        if summary is progress.MISS:  # MLflow reads may be slow: keep them off the event loop
            summary = await run_in_threadpool(progress.read, job.id, final=final)
    reason = scheduler.pending_reason(job.id) if job.state == JobState.PENDING.value else None
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
    outcome = scheduler.cancel(job_id, force=force)
    if outcome == "missing":
        raise _not_found(job_id)
    if outcome in (JobState.SUCCEEDED.value, JobState.FAILED.value):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {outcome}")
    return CancelResult(id=job_id, state=JobState(outcome))


async def _follow(request: Request, path: Path, job_id: str, start: int) -> AsyncIterator[bytes]:
    engine = request.app.state.engine
    poll = request.app.state.settings.POLL_INTERVAL_S
    offset = start

    def state() -> str | None:
        with engine.connect() as conn:
            job = store.get_job(conn=conn, job_id=job_id)
            return job.state if job else None

    while True:
        finished = await run_in_threadpool(state) in _FINAL | {None}
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            yield chunk
        if finished and not chunk:
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll)


@router.get(
    "/{job_id}/logs",
    summary="The driver log: its tail, or followed until the job ends",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"example": "epoch 1 val_acc 0.62\n"}}}},
)
def get_logs(
    job_id: str,
    request: Request,
    conn: ConnDep,
    scheduler: SchedulerDep,
    tail: Annotated[int | None, Query(ge=1, le=100000, description="last N lines")] = None,
    follow: Annotated[bool, Query(description="stream new lines until the job ends")] = False,
) -> Response:
    job = store.get_job(conn=conn, job_id=job_id)
    if job is None:
        raise _not_found(job_id)
    path = scheduler.job_dir(job_id) / "driver.log"
    size = path.stat().st_size if path.exists() else 0  # follow from here: nothing is lost
    if tail is not None:
        text = log_tail(path, lines=tail, max_bytes=max(16384, tail * 400))
        text = text + "\n" if text else ""
    else:
        try:
            with open(path, "rb") as fh:
                text = fh.read(size).decode("utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
    if not follow:
        return PlainTextResponse(text)

    async def stream() -> AsyncIterator[bytes]:
        if text:
            yield text.encode()
        async for chunk in _follow(request, path, job_id, size):
            yield chunk

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


@router.get(
    "/{job_id}/metrics",
    summary="Per-rule metrics of a job read from MLflow",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "job_id": "3f2a9c1d0b7e4a55",
                        "state": "SUCCEEDED",
                        "parent_run_id": "9d1c...",
                        "children": [
                            {
                                "rule": "ss",
                                "run_id": "a1b2...",
                                "status": "FINISHED",
                                "metrics": {"epoch": 3, "val_acc": 0.81, "align_mean_angle": 12.5},
                            }
                        ],
                    }
                }
            }
        }
    },
)
def get_metrics(job_id: str, conn: ConnDep, progress: ProgressDep) -> dict[str, Any]:
    job = store.get_job(conn=conn, job_id=job_id)
    if job is None:
        raise _not_found(job_id)
    summary = progress.read(job.id, final=job.state in _FINAL) if job.started_at else None
    summary = summary or {}
    return {
        "job_id": job.id,
        "state": job.state,
        "parent_run_id": summary.get("parent_run_id") or job.mlflow_parent_run_id,
        "children": summary.get("children", []),
    }
