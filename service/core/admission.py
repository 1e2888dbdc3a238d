"""Admission checks of ``POST /v1/experiments``: what a valid spec must also satisfy on this
service (its data directories, its MLflow store, its cluster) before it is stored.

Each check raises :class:`fastapi.exceptions.RequestValidationError` (422) with errors
shaped like pydantic's, so the client sees the field path (``loc``) of what to change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi.exceptions import RequestValidationError

from data_pipelines.location import is_uri
from service.core.resources import shortfall
from service.core.settings import Settings
from trainers.spec import ExperimentSpec
from trainers.storage import StorageLocation, parse_storage

__all__ = [
    "admit",
    "mask_uri",
    "check_data_dirs",
    "check_resources",
    "check_search",
    "check_storage_apart",
    "check_storage_uri",
    "check_sweep_size",
    "check_tracking",
]


def _error(kind: str, loc: tuple[str, ...], msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": ("body", *loc), "msg": msg, "input": value}


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _resolve(path: str, loc: tuple[str, ...]) -> tuple[Path | None, dict[str, Any] | None]:
    """A local path made absolute, normalised and its symlinks resolved."""
    try:
        return Path(path).expanduser().resolve(), None
    except (OSError, RuntimeError, ValueError) as exc:  # e.g. ~nosuchuser
        return None, _error("path_invalid", loc, f"cannot resolve {path!r}: {exc}", path)


def _storage(path: str) -> tuple[StorageLocation | None, dict[str, Any] | None]:
    """``storage_path`` parsed once, as the driver parses it (:func:`parse_storage`)."""
    try:
        return parse_storage(path), None
    except (OSError, RuntimeError, ValueError) as exc:
        return None, _error("path_invalid", ("storage_path",), f"storage_path: {exc}", path)


def check_storage_uri(spec: ExperimentSpec, settings: Settings) -> list[dict[str, Any]]:
    """``storage_path`` must parse (:func:`trainers.storage.parse_storage`: escapes decoded
    once, normalised), use one of ``STORAGE_SCHEMES``, and carry no query: an object store's
    endpoint and credentials come from the service's settings and the drivers' environment,
    never from a spec (``?endpoint_override=`` would point the driver's signed requests at
    any host)."""
    if spec.storage_path is None:
        return []
    location, error = _storage(spec.storage_path)
    if error is not None:
        return [error]
    assert location is not None
    scheme = location.scheme or "file"
    if scheme not in settings.STORAGE_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in settings.STORAGE_SCHEMES)
        return [
            _error(
                "scheme_not_allowed",
                ("storage_path",),
                f"storage_path scheme {scheme!r} is not enabled on this service "
                f"(BIOPROP_STORAGE_SCHEMES: {allowed})",
                spec.storage_path,
            )
        ]
    if location.query:
        return [
            _error(
                "storage_options_not_allowed",
                ("storage_path",),
                "storage_path may not carry query parameters (such as endpoint_override): "
                "the object store's endpoint and credentials are the service's settings",
                spec.storage_path,
            )
        ]
    return []


def _local_storage(spec: ExperimentSpec) -> Path | None:
    if spec.storage_path is None:
        return None
    location, _ = _storage(spec.storage_path)  # an unparsable one is check_storage_uri's 422
    return location.local if location is not None else None


def mask_uri(uri: str) -> str:
    """``uri`` with the password of its user info (and any token-like query) replaced by
    ``***``: error messages may name a store, never repeat its credentials."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
    storage = _local_storage(spec)
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
    as ``s3://bucket/prefix`` is object storage, not a local path: a ``data.root`` URI needs
    its scheme in ``STORAGE_SCHEMES``, read with the drivers' credentials)."""
    if not settings.DATA_DIRS:
        return []
    allowed = ", ".join(str(d) for d in settings.DATA_DIRS)
    errors = []
    if is_uri(spec.data.root):
        scheme = str(spec.data.root).split("://", 1)[0]
        if scheme not in settings.STORAGE_SCHEMES:
            errors.append(
                _error(
                    "scheme_not_allowed",
                    ("data", "root"),
                    f"data.root scheme {scheme!r} is not enabled on this service "
                    f"(BIOPROP_STORAGE_SCHEMES: {', '.join(settings.STORAGE_SCHEMES)})",
                    str(spec.data.root),
                )
            )
    elif spec.data.root is not None:
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
    storage = _local_storage(spec)
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
            f"this service records runs in its own MLflow store "
            f"({mask_uri(settings.MLFLOW_URI)}); leave tracking.uri unset",
            mask_uri(uri),
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
    check_storage_uri,
    check_storage_apart,
    check_data_dirs,
    check_tracking,
    check_resources,
    check_search,
)


def admit(spec: ExperimentSpec, settings: Settings) -> tuple[ExperimentSpec, str | None]:
    """Run every check; 422 with all their errors, or what to store: the spec, its
    ``storage_path`` in the canonical form that was checked (a local one an absolute,
    normalised path; no escapes left for a later layer to decode), and ``data.root`` as it
    resolved now, which the driver checks again before reading (a symlink re-pointed
    meanwhile fails there, :func:`trainers.storage.check_data_root`)."""
    errors = [error for check in CHECKS for error in check(spec, settings)]
    if errors:
        raise RequestValidationError(errors)
    if spec.storage_path is not None:
        location, _ = _storage(spec.storage_path)
        assert location is not None
        spec = spec.model_copy(update={"storage_path": location.canonical})
    data_root = None
    if spec.data.root is not None and not is_uri(spec.data.root):  # a URI is canonical already
        root, error = _resolve(str(spec.data.root), ("data", "root"))
        if error is not None:
            raise RequestValidationError([error])
        data_root = str(root)
    return spec, data_root
