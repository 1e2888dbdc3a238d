"""Service settings: one pydantic-settings ``BaseSettings`` read from ``BIOPROP_*`` variables.

Defaults make one laptop enough (SQLite job store and MLflow store under ``./bioprop-runs``,
no tokens, one job at a time, drivers as local subprocesses). Outside ``ENVIRONMENT=local``
the settings refuse to start without bearer tokens and data directories.

On a cluster: ``RAY_JOBS_URL`` (the Ray dashboard, e.g. ``http://ray-head:8265``) makes every
job's driver a Ray job; ``STORAGE_PATH`` (``s3://bucket/prefix``, ``gs://...``, ``file://...``
or a path every node mounts) is where jobs without a ``storage_path`` keep checkpoints;
``DATA_CACHE`` (a folder every node mounts) is where synthetic sets are built. The MLflow
server is the user's ``MLFLOW_TRACKING_URI`` unless ``BIOPROP_MLFLOW_URI`` names another.
Ray's own token auth (``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN``) is read by Ray's
job client from the environment.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.principals import TokenTable, parse_entries
from service.core.resources import Resources, capacity
from trainers.storage import SCHEMES

__all__ = ["Settings", "default_driver_cmd"]


def default_driver_cmd(ray_jobs_url: str | None = None) -> list[str]:
    """The driver of every job: ``python -m trainers.launch``. A local driver subprocess is
    started with the control plane's own interpreter (``sys.executable``); a driver
    submitted as a Ray job (``ray_jobs_url``) runs on the Ray head, where the control plane's
    interpreter path means nothing, so there ``python`` is whatever the head's shell finds on
    the ``PATH`` that ``ray start`` had (the Python that has bioprop and Ray installed)."""
    return ["python" if ray_jobs_url else sys.executable, "-m", "trainers.launch"]


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Control-plane settings (environment prefix ``BIOPROP_``)."""

    model_config = SettingsConfigDict(env_prefix="BIOPROP_", extra="ignore")

    ENVIRONMENT: Literal["local", "production"] = "local"
    API_TOKENS: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="comma-separated token entries: name:token (a user), name:role:token, "
        "name:role:sha256:<hex> or a bare token (an admin, as before principals; see "
        "service.core.principals); none and no TOKENS_FILE = open API (local use only)",
    )
    TOKENS_FILE: Path | None = Field(
        None,
        description="file of token entries, one a line (# comments), read again when it "
        "changes: rotate or revoke a token without a restart",
    )
    DATA_DIRS: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="comma-separated roots a spec's data.root must lie under; none = any",
    )
    RUN_DIR: Path = Field(default_factory=lambda: Path.cwd() / "bioprop-runs")
    DB_URL: str = Field("", description="job store URL; default sqlite:///<RUN_DIR>/jobs.db")
    MLFLOW_URI: str = Field(
        "",
        description="MLflow tracking URI; default MLFLOW_TRACKING_URI when set, else "
        "sqlite:///<RUN_DIR>/mlflow.db",
    )
    RAY_ADDRESS: str | None = Field(
        None, description="Ray cluster the local driver subprocesses connect to"
    )
    RAY_JOBS_URL: str | None = Field(
        None,
        description="Ray dashboard address (http://<head>:8265): each job's driver is "
        "submitted as a Ray job whose submission id is the job id; none = local driver "
        "subprocesses",
    )
    RAY_CAPACITY: bool = Field(
        False,
        description="with RAY_JOBS_URL: queue jobs against the CPUs/GPUs of the Ray cluster's "
        "alive nodes (a fixed-size cluster; with an autoscaler leave it off, or set "
        "CLUSTER_CPUS/GPUS to the most it grows to)",
    )
    STORAGE_PATH: str | None = Field(
        None,
        description="Ray Train storage of jobs whose spec sets no storage_path: s3://, gs://, "
        "file:// URI or a path every Ray node mounts; none = <driver cwd>/bioprop-runs/"
        "ray_results (one machine only)",
    )
    STORAGE_SCHEMES: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["file", "local", "s3", "gs", "gcs"],
        description="comma-separated storage_path schemes a spec may use (a plain path "
        "counts as file); an object store's endpoint and credentials come from the drivers' "
        "environment (DRIVER_ENV), never from the spec",
    )
    DATA_CACHE: Path | None = Field(
        None,
        description="folder every Ray node mounts where synthetic data sets are built; "
        "none = <driver cwd>/bioprop-runs/data",
    )
    DRIVER_ENV: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated names of further variables of the service's "
        "environment a local driver gets (beyond service.backends.driver_env's allow-list); never "
        "BIOPROP_* secrets",
    )
    MAX_BODY_BYTES: int = Field(1 << 20, ge=1024)
    MAX_CONCURRENT_JOBS: int = Field(1, ge=0, description="running drivers at once; others wait")
    CLUSTER_CPUS: float | None = Field(
        None,
        ge=0,
        description="CPUs the running jobs may hold together (scale.workers x "
        "cpus_per_worker each); a job that does not fit waits PENDING; none = unlimited",
    )
    CLUSTER_GPUS: float | None = Field(
        None,
        ge=0,
        description="GPUs the running jobs may hold together (scale.workers each when "
        "scale.gpu); none = unlimited",
    )
    QUOTA_JOBS: int | None = Field(
        None, ge=0, description="running jobs one principal may hold at once; none = no limit"
    )
    QUOTA_CPUS: float | None = Field(
        None, ge=0, description="CPUs one principal's running jobs may hold; none = no limit"
    )
    QUOTA_GPUS: float | None = Field(
        None, ge=0, description="GPUs one principal's running jobs may hold; none = no limit"
    )
    QUOTAS: dict[str, dict[Literal["jobs", "cpus", "gpus"], float | None]] = Field(
        default_factory=dict,
        description='per-principal overrides, JSON: {"ci": {"jobs": 1, "cpus": 8}, "ann": '
        '{"gpus": null}} (null: no limit); a job over its owner\'s quota waits PENDING',
    )
    MAX_SEARCH_SAMPLES: int = Field(
        64, ge=1, description="most search.num_samples a job may ask for (trials per grid point)"
    )
    CANCEL_GRACE_S: float = Field(30.0, ge=0, description="SIGTERM to SIGKILL delay on cancel")
    POLL_INTERVAL_S: float = Field(0.5, gt=0)
    WAKE_DELAY_S: float = Field(
        0.02,
        ge=0,
        description="after a submit wakes the scheduler, gather further submits this long "
        "before one pass (a burst of submissions costs one store pass, not one each)",
    )
    DRIVER_CMD: list[str] = Field(
        default_factory=lambda data: default_driver_cmd(data.get("RAY_JOBS_URL")),
        description="JSON list: the driver command, the spec and job options appended; default "
        "python -m trainers.launch (this process's interpreter for local drivers, the Ray "
        "head's `python` for Ray jobs)",
    )
    MAX_SWEEP_SETTINGS: int = Field(
        1000,
        ge=1,
        description="most settings one submitted spec may expand to (the product of its "
        "sweep axes' lengths); more is refused with 422",
    )
    STORE_POOL_SIZE: int = Field(
        10,
        ge=3,
        description="job-store connections: one for the scheduler, one for /healthz, the "
        "rest shared by API requests",
    )
    STORE_TIMEOUT_S: float = Field(
        5.0,
        gt=0,
        description="how long a request waits for a job-store connection before 503",
    )
    FOLLOW_HEARTBEAT_S: float = Field(
        15.0,
        gt=0,
        description="a followed log with no new output this long gets a [bioprop] status line",
    )
    FOLLOW_IDLE_S: float = Field(
        600.0,
        gt=0,
        description="a followed log with no new output this long is closed (follow again)",
    )
    MAX_HEADER_BYTES: int = Field(
        16384,
        ge=1024,
        description="request line and headers bound (bioprop serve); larger is refused",
    )
    HEADER_TIMEOUT_S: float = Field(
        10.0,
        gt=0,
        description="a request's line and headers must arrive within this many seconds "
        "(of the connection's opening or the request's first byte), else 408 and closed",
    )
    BODY_TIMEOUT_S: float = Field(
        30.0,
        gt=0,
        description="a request's body must arrive within this many seconds of its "
        "headers, else 408 and closed",
    )
    MAX_CONNECTIONS_PER_CLIENT: int = Field(
        256, ge=1, description="open connections one client address may hold; more get 429"
    )
    ALLOWED_HOSTS: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Host header values served while the API is open (no tokens): a page "
        "elsewhere cannot reach a local service by DNS rebinding; unused with tokens",
    )
    SHUTDOWN_GRACE_S: float = Field(
        5.0,
        ge=0,
        description="on SIGTERM, how long open requests (log follows) may finish first",
    )

    @field_validator("RAY_JOBS_URL", "STORAGE_PATH", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("RAY_JOBS_URL")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"BIOPROP_RAY_JOBS_URL {value!r} must be the Ray dashboard's http(s):// address "
                "(e.g. http://ray-head:8265), not a ray:// or GCS address"
            )
        return value.rstrip("/") if value else value

    @field_validator(
        "API_TOKENS", "DATA_DIRS", "STORAGE_SCHEMES", "DRIVER_ENV", "ALLOWED_HOSTS", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("STORAGE_SCHEMES")
    @classmethod
    def _known_schemes(cls, value: list[str]) -> list[str]:
        value = [s.lower().removesuffix("://") for s in value]
        unknown = sorted(set(value) - set(SCHEMES))
        if unknown:
            raise ValueError(
                f"BIOPROP_STORAGE_SCHEMES: {', '.join(unknown)} not among {', '.join(SCHEMES)}"
            )
        return value

    @model_validator(mode="after")
    def _defaults_and_safety(self) -> Settings:
        self.RUN_DIR = self.RUN_DIR.expanduser().resolve()
        if not self.DB_URL:
            self.DB_URL = f"sqlite:///{self.RUN_DIR / 'jobs.db'}"
        if not self.MLFLOW_URI:
            self.MLFLOW_URI = (
                os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.RUN_DIR / 'mlflow.db'}"
            )
        self.DATA_DIRS = [p.expanduser().resolve() for p in self.DATA_DIRS]
        parse_entries(self.token_entries(), "BIOPROP_API_TOKENS")  # a bad entry stops here
        if self.ENVIRONMENT != "local":
            if not self.API_TOKENS and self.TOKENS_FILE is None:
                raise ValueError(
                    "BIOPROP_API_TOKENS must be set (or BIOPROP_TOKENS_FILE) outside "
                    "ENVIRONMENT=local"
                )
            if not self.DATA_DIRS:
                raise ValueError("BIOPROP_DATA_DIRS must be set outside ENVIRONMENT=local")
        return self

    def cluster(self) -> Resources:
        return capacity(self.CLUSTER_CPUS, self.CLUSTER_GPUS)

    def quota(self, owner: str | None) -> tuple[float, Resources]:
        """``(running jobs, resources)`` the principal ``owner`` may hold at once (inf: no
        limit): ``QUOTA_*`` unless ``QUOTAS`` names the principal."""
        own = self.QUOTAS.get(owner or "", {})

        def limit(key: str, default: float | None) -> float:
            value = own.get(key, default)  # type: ignore[call-overload]
            return math.inf if value is None else float(value)

        jobs = limit("jobs", self.QUOTA_JOBS)
        return jobs, Resources(limit("cpus", self.QUOTA_CPUS), limit("gpus", self.QUOTA_GPUS))

    def token_values(self) -> list[bytes]:
        return [t.get_secret_value().encode() for t in self.API_TOKENS]

    def token_entries(self) -> list[str]:
        return [t.get_secret_value() for t in self.API_TOKENS]

    def token_table(self) -> TokenTable:
        """Who each bearer token is (:mod:`service.core.principals`)."""
        return TokenTable(self.token_entries(), self.TOKENS_FILE)

    @property
    def open_api(self) -> bool:
        return not self.API_TOKENS and self.TOKENS_FILE is None
