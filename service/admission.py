"""Admission checks of ``POST /v1/experiments``: what a valid spec must also satisfy on this
service (its data directories, its MLflow store, its cluster) before it is stored.

Each check raises :class:`fastapi.exceptions.RequestValidationError` (422) with errors
shaped like pydantic's, so the client sees the field path (``loc``) of what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError

from service.resources import shortfall
from service.settings import Settings
from trainers.spec import ExperimentSpec
from trainers.storage import is_uri

__all__ = ["admit", "check_data_dirs", "check_resources", "check_tracking"]


def _error(kind: str, loc: tuple[str, ...], msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": ("body", *loc), "msg": msg, "input": value}


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_data_dirs(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """``data.root`` must lie under one of ``settings.DATA_DIRS`` and a local ``storage_path``
    under one of them or ``RUN_DIR`` (checked only when DATA_DIRS is configured; a URI such
    as ``s3://bucket/prefix`` is object storage, not a local path)."""
    if not settings.DATA_DIRS:
        return []
    allowed = ", ".join(str(d) for d in settings.DATA_DIRS)
    errors = []
    if spec.data.root is not None:
        root = Path(spec.data.root).expanduser().resolve()
        if not _under(root, settings.DATA_DIRS):
            errors.append(
                _error(
                    "path_not_allowed",
                    ("data", "root"),
                    f"data.root {str(root)!r} is not under an allowed data directory ({allowed})",
                    str(spec.data.root),
                )
            )
    if spec.storage_path is not None and not is_uri(spec.storage_path):
        storage = Path(spec.storage_path).expanduser().resolve()
        if not _under(storage, [*settings.DATA_DIRS, settings.RUN_DIR]):
            errors.append(
                _error(
                    "path_not_allowed",
                    ("storage_path",),
                    f"storage_path {str(storage)!r} is not under an allowed data directory "
                    f"({allowed}) or the run directory ({settings.RUN_DIR})",
                    str(spec.storage_path),
                )
            )
    return errors


def check_tracking(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """The spec may not name an MLflow store other than the service's: progress, metrics
    and the runs' job tags must land where the service reads them."""
    uri = spec.tracking.uri
    if uri is None or uri == settings.MLFLOW_URI:
        return []
    return [
        _error(
            "tracking_uri_not_allowed",
            ("tracking", "uri"),
            f"this service records runs in its own MLflow store ({settings.MLFLOW_URI}); "
            "leave tracking.uri unset",
            uri,
        )
    ]


def check_resources(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """The job may not need more CPUs or GPUs than the whole cluster has (it would wait
    PENDING forever); checked only when ``CLUSTER_CPUS``/``CLUSTER_GPUS`` are set."""
    if settings.CLUSTER_CPUS is None and settings.CLUSTER_GPUS is None:
        return []
    return [
        _error("exceeds_cluster", ("scale", field), msg, getattr(spec.scale, field))
        for field, msg in shortfall(spec.scale, settings.cluster())
    ]


CHECKS = (check_data_dirs, check_tracking, check_resources)


def admit(spec: ExperimentSpec, settings: Settings) -> None:
    """Run every check; 422 with all their errors, or return when the spec may be stored."""
    errors = [error for check in CHECKS for error in check(spec, settings)]
    if errors:
        raise RequestValidationError(errors)
