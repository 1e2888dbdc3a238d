"""Reading and writing data sets on object storage (``s3://bucket/prefix``) with pyarrow.

DALI's readers open ``s3://`` files themselves (its bundled AWS SDK client; endpoint from
``AWS_ENDPOINT_URL``); this module does what the loaders need around them: list a prefix
(the class folders and images of an ImageNet-layout root), read small objects (``wds.json``),
write what ``bioprop data prepare`` produces, and the preflight (:func:`check_root`) that
fails with the URI named, before any worker starts, when the bucket or prefix is missing or
the credentials are wrong. The filesystem is ``pyarrow.fs.S3FileSystem`` as
``FileSystem.from_uri`` builds it, so credentials and endpoint come from the same sources as
for ``s3://`` checkpoints: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or the node's
role), ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible store.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any

__all__ = [
    "DataRootError",
    "check_bucket",
    "check_root",
    "download_file",
    "exists",
    "list_files",
    "read_bytes",
    "upload_file",
    "write_bytes",
]

log = logging.getLogger(__name__)

CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the node's role) and, for an "
    "S3-compatible store, AWS_ENDPOINT_URL"
)


class DataRootError(FileNotFoundError):
    """An object-store data root that cannot be read; the message names the URI."""


def _split(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


#: the environment settings a filesystem is built from (a change builds a new one)
ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)


@cache
def _fs(scheme: str, bucket: str, env: tuple[str | None, ...]) -> Any:
    import pyarrow.fs

    fs, _ = pyarrow.fs.FileSystem.from_uri(f"{scheme}://{bucket}")
    return fs


def _fs_path(uri: str) -> tuple[Any, str]:
    bucket, key = _split(uri)
    try:
        fs = _fs(uri.split("://", 1)[0], bucket, tuple(os.environ.get(k) for k in ENV_KEYS))
    except (OSError, ValueError) as exc:
        raise DataRootError(f"{uri}: cannot open the object store: {exc}") from exc
    return fs, f"{bucket}/{key}".rstrip("/")


def _error(uri: str, exc: Exception) -> DataRootError:
    text = str(exc)
    hint = ""
    if any(
        w in text for w in ("AccessDenied", "ACCESS_DENIED", "403", "InvalidAccessKey", "Signature")
    ):
        hint = f" ({CREDENTIALS_HINT})"
    return DataRootError(f"{uri}: cannot be read: {text.splitlines()[0] if text else exc}{hint}")


def list_files(uri: str) -> dict[str, int]:
    """Every object under the prefix ``uri``: key relative to it -> size in bytes ({} when
    none)."""
    import pyarrow.fs

    fs, path = _fs_path(uri)
    try:
        infos = fs.get_file_info(
            pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
        )
    except OSError as exc:
        raise _error(uri, exc) from exc
    cut = len(path) + 1
    return {i.path[cut:]: i.size for i in infos if i.type == pyarrow.fs.FileType.File}


def exists(uri: str) -> bool:
    """True when ``uri`` is an object."""
    import pyarrow.fs

    fs, path = _fs_path(uri)
    try:
        return fs.get_file_info(path).type == pyarrow.fs.FileType.File
    except OSError as exc:
        raise _error(uri, exc) from exc


def read_bytes(uri: str) -> bytes:
    """The content of the object ``uri``; :class:`DataRootError` naming it otherwise."""
    fs, path = _fs_path(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as exc:
        raise DataRootError(f"{uri}: object not found") from exc
    except OSError as exc:
        raise _error(uri, exc) from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Put ``data`` at ``uri`` (one PUT: readers see the whole object or none)."""
    fs, path = _fs_path(uri)
    try:
        with fs.open_output_stream(path) as stream:
            stream.write(data)
    except OSError as exc:
        raise _error(uri, exc) from exc


def upload_file(local: str | os.PathLike[str], uri: str, chunk: int = 8 << 20) -> None:
    """Copy the local file to ``uri`` in ``chunk``-byte pieces (a shard is never held in
    memory whole); the object appears when the upload completes."""
    fs, path = _fs_path(uri)
    try:
        with open(local, "rb") as source, fs.open_output_stream(path) as stream:
            while piece := source.read(chunk):
                stream.write(piece)
    except OSError as exc:
        raise _error(uri, exc) from exc


def download_file(uri: str, local: str | os.PathLike[str], chunk: int = 8 << 20) -> int:
    """Copy the object ``uri`` to the local file in ``chunk``-byte pieces (whole-object
    GETs, never held in memory whole); returns the bytes written."""
    fs, path = _fs_path(uri)
    written = 0
    try:
        with fs.open_input_stream(path) as stream, open(local, "wb") as out:
            while piece := stream.read(chunk):
                out.write(piece)
                written += len(piece)
    except FileNotFoundError as exc:
        raise DataRootError(f"{uri}: object not found") from exc
    except OSError as exc:
        raise _error(uri, exc) from exc
    return written


def check_bucket(uri: str) -> None:
    """:class:`DataRootError` naming ``uri`` unless its bucket exists and answers with the
    environment's credentials."""
    import pyarrow.fs

    bucket, _ = _split(uri)
    fs, _ = _fs_path(uri)
    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        raise _error(uri, exc) from exc
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataRootError(f"{uri}: bucket {bucket!r} does not exist")


def check_root(uri: str) -> dict[str, int]:
    """Preflight of a data root on object storage: the bucket answers with these credentials
    and the prefix holds objects; returns :func:`list_files` of it. :class:`DataRootError`
    names the URI and what is wrong."""
    try:
        check_bucket(uri)
    except DataRootError as exc:
        raise DataRootError(f"data.root {exc}") from exc.__cause__
    files = list_files(uri)
    if not files:
        raise DataRootError(f"data.root {uri}: no objects under this prefix")
    return files
