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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from data_pipelines.location import is_uri as is_data_uri

__all__ = [
    "ENV_STORAGE_PATH",
    "LOCAL_SCHEMES",
    "OBJECT_SCHEMES",
    "SCHEMES",
    "StorageError",
    "StorageLocation",
    "check_data_root",
    "check_storage",
    "checkpoint_uri",
    "is_uri",
    "parse_storage",
    "resolve_storage",
    "validate_storage_path",
]

ENV_STORAGE_PATH = "BIOPROP_STORAGE_PATH"
ENV_DATA_ROOT = "BIOPROP_DATA_ROOT"  # data.root as the service resolved it at admission
ENV_DATA_DIRS = "BIOPROP_DATA_DIRS"  # the service's DATA_DIRS, os.pathsep-separated
# schemes pyarrow.fs resolves from a URI (Ray Train's storage_path goes through it)
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file", "local")
LOCAL_SCHEMES = ("file", "local")
OBJECT_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss")  # the netloc names a bucket/container
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,220}[A-Za-z0-9])?$")


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


@dataclass(frozen=True)
class StorageLocation:
    """A ``storage_path`` parsed once: ``scheme`` ("" for a plain path), the ``bucket`` (or
    host) of a URI, ``path`` percent-decoded and normalised, and the URI's ``query``.
    ``canonical`` is the form handed on (a plain absolute path for local storage), so what
    was checked is what is written to: nothing downstream decodes it again."""

    scheme: str
    bucket: str
    path: str
    query: str = ""

    @property
    def local(self) -> Path | None:
        """The folder, for local storage (a plain path, ``file://``, ``local://``)."""
        return Path(self.path) if self.scheme in ("", *LOCAL_SCHEMES) else None

    @property
    def canonical(self) -> str:
        if self.local is not None:
            return self.path
        key = quote(self.path.lstrip("/"), safe="/")
        uri = f"{self.scheme}://{self.bucket}/{key}".rstrip("/")
        return f"{uri}?{self.query}" if self.query else uri


def parse_storage(value: str, *, base: Path | None = None) -> StorageLocation:
    """Parse a ``storage_path`` the one way the service and the driver both read it.

    Percent-escapes are decoded once (``%2e%2e`` is ``..``, ``%2f`` is ``/``) and a decoded
    ``%`` is refused, so no later layer can decode to something else; a local path is then
    made absolute (against ``base``, default the working directory) and normalised, its
    symlinks resolved; an object-store URI must name a bucket and holds no ``.``/``..``
    segment and no credentials. ``ValueError`` names what is wrong."""
    text = str(value).strip()
    if not text:
        raise ValueError("storage_path must not be empty")
    match = _URI.match(text)
    if match is None:
        scheme, bucket, raw, query = "", "", text, ""
    else:
        parts = urlsplit(text)
        scheme, bucket, raw, query = parts.scheme.lower(), parts.netloc, parts.path, parts.query
        if scheme not in SCHEMES:
            raise ValueError(
                f"scheme {scheme!r} is not one Ray Train's storage (pyarrow.fs) resolves; use "
                f"one of {', '.join(s + '://' for s in SCHEMES)} or a plain path"
            )
        if parts.fragment:
            raise ValueError("a storage URI takes no '#' fragment")
        raw, bucket = unquote(raw), unquote(bucket)
    if "%" in raw or "%" in bucket or "\x00" in raw:
        raise ValueError("storage_path holds '%' (or a NUL) after decoding its escapes once")
    if scheme in ("", *LOCAL_SCHEMES):
        if bucket not in ("", "localhost"):
            raise ValueError(
                f"a {scheme}:// URI names no host (got {bucket!r}); use {scheme}:///path"
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return StorageLocation(scheme, "", str(path.resolve()), query)
    host_ok = _BUCKET.match(bucket) if scheme in OBJECT_SCHEMES else bucket
    if "@" in bucket or ".." in bucket or not host_ok:
        raise ValueError(
            f"a {scheme}:// URI must name a bucket ({scheme}://bucket/prefix), without "
            f"credentials or a port; got {bucket!r}"
        )
    segments = [s for s in raw.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError("an object-store key may not hold '.' or '..' segments")
    return StorageLocation(scheme, bucket, "/".join(segments), query)


def resolve_storage(path: str | os.PathLike[str] | None) -> str:
    """``path``, else ``$BIOPROP_STORAGE_PATH``, else ``./bioprop-runs/ray_results``, parsed
    by :func:`parse_storage`: a URI in its canonical form, a local folder (plain path,
    ``file://`` or ``local://``) as an absolute path, created."""
    value = str(path) if path else os.environ.get(ENV_STORAGE_PATH, "").strip()
    if not value:
        value = str(Path.cwd() / "bioprop-runs" / "ray_results")
    try:
        location = parse_storage(value)
    except ValueError as exc:
        raise StorageError(f"storage_path {value!r}: {exc}") from exc
    if location.local is not None:
        location.local.mkdir(parents=True, exist_ok=True)
    return location.canonical


def check_data_root(
    root: str | os.PathLike[str] | None, environ: Mapping[str, str] = os.environ
) -> None:
    """Before a driver reads ``data.root``: it must still resolve to the folder the service
    admitted (``BIOPROP_DATA_ROOT``) and lie under ``BIOPROP_DATA_DIRS``; a symlink
    re-pointed since the job was submitted raises :class:`StorageError`. No-op outside the
    service (neither variable set)."""
    admitted = environ.get(ENV_DATA_ROOT)
    if root is None or not admitted or is_data_uri(root):  # object storage: no symlinks
        return
    now = Path(root).expanduser().resolve()
    if str(now) != admitted:
        raise StorageError(
            f"data.root {str(root)!r} now resolves to {str(now)!r}, not to {admitted!r} as "
            "when the job was admitted (a symlink re-pointed?); refusing to read it"
        )
    dirs = [Path(d) for d in environ.get(ENV_DATA_DIRS, "").split(os.pathsep) if d]
    if dirs and not any(now == d or now.is_relative_to(d) for d in dirs):
        raise StorageError(f"data.root {str(now)!r} is not under the service's DATA_DIRS")


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
