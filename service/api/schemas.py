"""Request and response schemas of the REST API (``XCreate``/``XPublic`` pairs)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from service.core.store import Job, JobState

__all__ = [
    "DEMO_SPEC_EXAMPLE",
    "CancelResult",
    "Health",
    "JobList",
    "JobPublic",
    "Metrics",
    "responses",
]

DEMO_SPEC_EXAMPLE: dict[str, Any] = {
    "name": "demo-sweep",
    "task": "classify",
    "model": "convnet",
    "data": {"kind": "synthetic", "image_size": 32},
    "rule": {"name": ["bp", "fa", "ss"]},
    "optim": {"name": "sgd", "lr": 0.05},
    "schedule": {"epochs": 3},
    "batch_size": 32,
    "scale": {"workers": 2},
}


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class JobPublic(BaseModel):
    """A job as the API shows it."""

    id: str
    name: str
    state: JobState
    owner: str | None = Field(
        None, description="the principal that submitted it (null: stored before owners)"
    )
    priority: int = Field(0, description="order among its owner's PENDING jobs, higher first")
    spec: dict[str, Any] | None = Field(
        None, description="the submitted spec; in lists only with include=spec"
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    mlflow_parent_run_id: str | None = Field(
        None,
        description="the job's MLflow parent run; in lists once the job has ended (one job's "
        "GET finds it in MLflow while the job runs)",
    )
    result: dict[str, Any] | None = Field(
        None, description="the driver's result.json, when written"
    )
    progress: dict[str, Any] | None = Field(
        None, description="what MLflow holds for the job: parent run, per-rule status and metrics"
    )
    pending_reason: str | None = Field(
        None,
        description="why a PENDING job has not started (a slot, resources, or an older job "
        "ahead of it); single-job reads only",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "3f2a9c1d0b7e4a55",
                    "name": "demo-sweep",
                    "state": "RUNNING",
                    "owner": "ann",
                    "spec": DEMO_SPEC_EXAMPLE,
                    "created_at": "2026-11-23T09:30:00Z",
                    "started_at": "2026-11-23T09:30:01Z",
                    "finished_at": None,
                    "error": None,
                    "mlflow_parent_run_id": "9d1c...",
                    "result": None,
                    "progress": {
                        "parent_run_id": "9d1c...",
                        "status": "RUNNING",
                        "children": [
                            {
                                "rule": "bp",
                                "status": "RUNNING",
                                "metrics": {"epoch": 1, "val_acc": 0.61},
                            }
                        ],
                    },
                }
            ]
        }
    }

    @classmethod
    def from_job(
        cls,
        job: Job,
        *,
        progress: dict[str, Any] | None = None,
        pending_reason: str | None = None,
    ) -> JobPublic:
        return cls(
            id=job.id,
            name=job.name,
            state=job.state,
            owner=job.owner,
            priority=job.priority or 0,
            spec=job.spec,
            created_at=_utc(job.created_at),
            started_at=_utc(job.started_at),
            finished_at=_utc(job.finished_at),
            error=job.error,
            mlflow_parent_run_id=job.mlflow_parent_run_id or (progress or {}).get("parent_run_id"),
            result=job.result,
            progress=progress,
            pending_reason=pending_reason,
        )


class JobList(BaseModel):
    """A page of jobs, newest first. ``limit`` is the page size served (with
    ``include=spec`` at most ``SPEC_PAGE``)."""

    items: list[JobPublic]
    total: int = Field(description="jobs matching the filters, all pages")
    limit: int
    offset: int


class Metrics(BaseModel):
    """``GET /v1/experiments/{id}/metrics``: what MLflow holds for each setting of a job."""

    job_id: str
    state: JobState
    parent_run_id: str | None = Field(None, description="the job's MLflow parent run")
    children: list[dict[str, Any]] = Field(
        default_factory=list,
        description="one per setting: rule, MLflow run id, status, latest metrics",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
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
            ]
        }
    }


class CancelResult(BaseModel):
    id: str
    state: JobState


class Health(BaseModel):
    status: str = "ok"
    jobs_active: int = 0
    jobs_pending: int = 0
    cpus_in_use: float = Field(0, description="CPUs the RUNNING/CANCELLING jobs hold (scale)")
    gpus_in_use: float = Field(0, description="GPUs the RUNNING/CANCELLING jobs hold (scale)")
    cpus_total: float | None = Field(
        None, description="CPUs the queue fills (see capacity_from); null: unlimited"
    )
    gpus_total: float | None = Field(
        None, description="GPUs the queue fills (see capacity_from); null: unlimited"
    )
    capacity_from: str = Field(
        "unlimited",
        description="where the totals come from: 'settings' (BIOPROP_CLUSTER_CPUS/GPUS), "
        "'ray' (the Ray cluster's alive nodes, BIOPROP_RAY_CAPACITY, as last read) or "
        "'unlimited'",
    )


_MESSAGE = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        }
    }
}
_ERRORS: dict[int, str] = {
    400: "The body could not be parsed",
    401: "Missing or invalid bearer token (when BIOPROP_API_TOKENS is set)",
    403: "The caller's role does not allow it (a user naming another principal)",
    404: "No such job",
    409: "The job already finished",
    413: "Request body larger than BIOPROP_MAX_BODY_BYTES",
    415: "The body is not application/json",
    503: "The job store had no free connection within BIOPROP_STORE_TIMEOUT_S; retry after "
    "the Retry-After header's seconds",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (422 FastAPI documents itself): a JSON
    ``{"detail": "..."}`` body, also on endpoints whose success is plain text (413's body is
    Starlette's plain text)."""
    return {
        code: {"description": _ERRORS[code], **({} if code == 413 else {"content": _MESSAGE})}
        for code in codes
    }
