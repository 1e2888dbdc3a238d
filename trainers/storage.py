"""Where Ray Train keeps a job's checkpoints: a local folder or a URI on shared storage.

``storage_path`` (spec field, else ``BIOPROP_STORAGE_PATH``, else
``./bioprop-runs/ray_results``) is handed to Ray Train's ``RunConfig(storage_path=...)`` as
Ray documents it: a URI that ``pyarrow.fs.FileSystem.from_uri`` resolves (``s3://bucket/
prefix``, ``gs://bucket/prefix``, ``file:///shared/runs``; query options such as
``?endpoint_override=host:port&scheme=http`` for an S3-compatible store) or a plain path.
A cluster needs a URI or a path every node mounts: Ray Train refuses a head-local folder
when workers sit on other nodes. S3 credentials and endpoint come from pyarrow's usual
sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, the node's
role).

:func:`check_storage` opens the location before any work starts, so a bucket that does not
exist or missing credentials fail with one clear message instead of inside a Ray worker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "ENV_STORAGE_PATH",
    "SCHEMES",
    "StorageError",
    "check_storage",
    "checkpoint_uri",
    "is_uri",
    "resolve_storage",
    "validate_storage_path",
]

ENV_STORAGE_PATH = "BIOPROP_STORAGE_PATH"
# schemes pyarrow.fs resolves from a URI (Ray Train's storage_path goes through it)
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file", "local")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageError(RuntimeError):
    """A storage location that cannot be used (missing bucket, credentials, bad URI)."""


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (object or shared storage), False for a plain path."""
    return bool(_URI.match(str(path)))


def checkpoint_uri(storage: str, path: str) -> str:
    """The location of ``path`` under ``storage`` as a URI Ray Train and pyarrow resolve.

    Ray Train names a checkpoint by its path on the storage's filesystem
    (``Checkpoint.path``, and Tune's ``checkpoint_path`` result): on object storage that is
    ``<bucket>/<prefix>/...`` with the scheme (and any ``?endpoint_override=`` options) of
    ``storage`` dropped. Given back here, so ``Checkpoint(uri)`` opens it on any node and a
    tag names it completely. A path that is a URI already, or storage that is a plain
    folder, is returned as it is."""
    if is_uri(path) or not is_uri(storage):
        return path
    scheme = _URI.match(storage).group(1)  # type: ignore[union-attr]
    if scheme.lower() in ("file", "local"):
        return f"{scheme}://{path}"  # pyarrow's local path is absolute: file:///...
    query = storage.split("?", 1)[1] if "?" in storage else ""
    return f"{scheme}://{path.lstrip('/')}" + (f"?{query}" if query else "")


def validate_storage_path(value: str) -> str:
    """The spec field's check: a plain path, or a URI whose scheme pyarrow resolves."""
    match = _URI.match(value)
    if match and match.group(1).lower() not in SCHEMES:
        raise ValueError(
            f"storage_path {value!r}: scheme {match.group(1)!r} is not one Ray Train's "
            f"storage (pyarrow.fs) resolves; use one of {', '.join(s + '://' for s in SCHEMES)} "
            "or a plain path"
        )
    if not value.strip():
        raise ValueError("storage_path must not be empty")
    return value


def resolve_storage(path: str | os.PathLike[str] | None) -> str:
    """``path``, else ``$BIOPROP_STORAGE_PATH``, else ``./bioprop-runs/ray_results``: a URI
    unchanged, a plain path made absolute and created."""
    value = str(path) if path else os.environ.get(ENV_STORAGE_PATH, "").strip()
    if not value:
        value = str(Path.cwd() / "bioprop-runs" / "ray_results")
    if is_uri(value):
        return value
    local = Path(value).expanduser().resolve()
    local.mkdir(parents=True, exist_ok=True)
    return str(local)


def check_storage(uri: str) -> None:
    """Raise :class:`StorageError` unless ``uri``'s bucket (or folder) exists and can be
    listed with the credentials at hand. Plain paths are created instead."""
    if not is_uri(uri):
        resolve_storage(uri)
        return
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise StorageError(f"storage_path {uri!r} cannot be opened: {exc}") from exc
    scheme = _URI.match(uri).group(1).lower()  # type: ignore[union-attr]
    root = path.split("/", 1)[0] if scheme in ("s3", "gs", "gcs") else path
    try:
        info = fs.get_file_info(root)
    except OSError as exc:
        hint = ""
        if scheme == "s3":
            hint = (
                "; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the node's role) and, "
                "for an S3-compatible store, AWS_ENDPOINT_URL or ?endpoint_override="
            )
        raise StorageError(f"storage_path {uri!r}: cannot reach {root!r}: {exc}{hint}") from exc
    if info.type == pyarrow.fs.FileType.NotFound:
        what = "bucket" if scheme in ("s3", "gs", "gcs") else "folder"
        if what == "folder" and scheme in ("file", "local"):
            fs.create_dir(path, recursive=True)
            return
        raise StorageError(f"storage_path {uri!r}: {what} {root!r} does not exist; create it first")
