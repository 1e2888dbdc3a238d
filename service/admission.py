"""Admission checks of ``POST /v1/experiments``: what a valid spec must also satisfy on this
service (its data directories, its MLflow store, its cluster) before it is stored.

Each check raises :class:`fastapi.exceptions.RequestValidationError` (422) with errors
shaped like pydantic's, so the client sees the field path (``loc``) of what to change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.exceptions import RequestValidationError

from service.resources import shortfall
from service.settings import Settings
from trainers.spec import ExperimentSpec
from trainers.storage import is_uri

__all__ = [
    "admit",
    "check_data_dirs",
    "check_resources",
    "check_search",
    "check_storage_apart",
    "check_sweep_size",
    "check_tracking",
]


def _error(kind: str, loc: tuple[str, ...], msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": ("body", *loc), "msg": msg, "input": value}


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _local(path: str) -> Path | None:
    """A local ``storage_path`` (a plain path or a ``file://``/``local://`` URI) resolved;
    None for object storage (``s3://`` ...)."""
    if is_uri(path):
        parts = urlsplit(path)
        if parts.scheme.lower() not in ("file", "local"):
            return None
        path = parts.path
    return Path(path).expanduser().resolve()


def _resolve(path: str, loc: tuple[str, ...]) -> tuple[Path | None, dict[str, Any] | None]:
    try:
        return _local(path), None
    except (OSError, RuntimeError, ValueError) as exc:  # e.g. ~nosuchuser
        return None, _error("path_invalid", loc, f"cannot resolve {path!r}: {exc}", path)


def check_sweep_size(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """The sweep may expand to at most ``MAX_SWEEP_SETTINGS`` settings (counted without
    expanding: the product of the axes' lengths)."""
    axes = spec.sweep_axes()
    size = math.prod(len(values) for values in axes.values())
    if size <= settings.MAX_SWEEP_SETTINGS:
        return []
    factors = " x ".join(f"{path} ({len(values)})" for path, values in axes.items())
    return [
        _error(
            "sweep_too_large",
            (),
            f"the sweep expands to {size} settings ({factors}), more than this service's "
            f"BIOPROP_MAX_SWEEP_SETTINGS={settings.MAX_SWEEP_SETTINGS}; split it into "
            "smaller submissions",
            {path: len(values) for path, values in axes.items()},
        )
    ]


def check_storage_apart(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """A local ``storage_path`` may not be the run directory, hold it, or lie in its job
    folders (``RUN_DIR/jobs``): a job's checkpoints would land in another job's folder or
    overwrite the job store (checked always, with or without DATA_DIRS)."""
    if spec.storage_path is None:
        return []
    storage, error = _resolve(spec.storage_path, ("storage_path",))
    if error is not None:
        return [error]
    if storage is None:
        return []
    run_dir = settings.RUN_DIR
    jobs = run_dir / "jobs"
    if storage == run_dir or run_dir.is_relative_to(storage) or storage.is_relative_to(jobs):
        return [
            _error(
                "path_not_allowed",
                ("storage_path",),
                f"storage_path {str(storage)!r} overlaps the service's run directory "
                f"({run_dir}: job store and job folders); use a folder of its own, e.g. "
                f"{run_dir / 'storage'}",
                spec.storage_path,
            )
        ]
    return []


def check_data_dirs(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """``data.root`` must lie under one of ``settings.DATA_DIRS`` and a local ``storage_path``
    under one of them or ``RUN_DIR`` (checked only when DATA_DIRS is configured; a URI such
    as ``s3://bucket/prefix`` is object storage, not a local path)."""
    if not settings.DATA_DIRS:
        return []
    allowed = ", ".join(str(d) for d in settings.DATA_DIRS)
    errors = []
    if spec.data.root is not None:
        root, error = _resolve(str(spec.data.root), ("data", "root"))
        if error is not None:
            errors.append(error)
        elif root is not None and not _under(root, settings.DATA_DIRS):
            errors.append(
                _error(
                    "path_not_allowed",
                    ("data", "root"),
                    f"data.root {str(root)!r} is not under an allowed data directory ({allowed})",
                    str(spec.data.root),
                )
            )
    storage = None
    if spec.storage_path is not None:  # an unresolvable one is check_storage_apart's 422
        storage, _ = _resolve(spec.storage_path, ("storage_path",))
    if storage is not None:
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


def check_search(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """A search may ask for at most ``MAX_SEARCH_SAMPLES`` trials per grid point."""
    if spec.search is None or spec.search.num_samples <= settings.MAX_SEARCH_SAMPLES:
        return []
    return [
        _error(
            "too_many_samples",
            ("search", "num_samples"),
            f"search.num_samples {spec.search.num_samples} is more than this service allows "
            f"({settings.MAX_SEARCH_SAMPLES}, BIOPROP_MAX_SEARCH_SAMPLES)",
            spec.search.num_samples,
        )
    ]


CHECKS = (
    check_sweep_size,
    check_storage_apart,
    check_data_dirs,
    check_tracking,
    check_resources,
    check_search,
)


def admit(spec: ExperimentSpec, settings: Settings) -> None:
    """Run every check; 422 with all their errors, or return when the spec may be stored."""
    errors = [error for check in CHECKS for error in check(spec, settings)]
    if errors:
        raise RequestValidationError(errors)
