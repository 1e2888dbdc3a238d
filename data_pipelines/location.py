"""Where a data set lives: a local folder or an object-store prefix (``s3://bucket/prefix``).

``data.root`` (and the CLI's ``bioprop data ...`` roots) take either. A URI is parsed once by
:func:`parse_data_uri`, the data layer's counterpart of ``trainers.storage.parse_storage``
(which ``data_pipelines`` may not import): the scheme must be one the readers support
(:data:`URI_SCHEMES`), percent-escapes are decoded once and a decoded ``%`` refused, the
bucket is named, the key holds no ``.``/``..`` segment, and there are no credentials, port or
query options in it: the endpoint and credentials come from the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the node's role), the
same settings checkpoints on ``s3://`` use, never from a spec. The canonical form
``s3://bucket/key`` (no trailing slash) is what is kept, so ``pathlib`` never sees a URI
(``Path("s3://b/x")`` is ``s3:/b/x``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["URI_SCHEMES", "is_uri", "join_uri", "parse_data_uri", "root_name", "to_root"]

#: schemes a data root may use: those DALI's readers open (its S3 client) and pyarrow lists
URI_SCHEMES = ("s3",)
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{1,61}[a-z0-9])$")


def is_uri(value: Any) -> bool:
    """True for ``scheme://...`` text (object storage), False for a path."""
    return isinstance(value, str) and bool(_URI.match(value))


def parse_data_uri(value: str) -> str:
    """The canonical ``s3://bucket/key`` of a data-root URI; ``ValueError`` saying what is
    wrong (scheme, bucket, credentials, port, query, ``..``) otherwise."""
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    if scheme not in URI_SCHEMES:
        raise ValueError(
            f"{value!r}: scheme {scheme!r} is not one the data readers open; use "
            f"{', '.join(s + '://bucket/prefix' for s in URI_SCHEMES)} or a local path"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"{value!r}: a data URI takes no '?' options or '#' fragment; the endpoint and "
            "credentials come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)"
        )
    bucket, key = unquote(parts.netloc), unquote(parts.path)
    if "%" in bucket or "%" in key or "\x00" in key:
        raise ValueError(f"{value!r}: holds '%' (or a NUL) after decoding its escapes once")
    if "@" in bucket or ":" in bucket or not _BUCKET.match(bucket):
        raise ValueError(
            f"{value!r}: must name a bucket ({scheme}://bucket/prefix: 3-63 lower-case "
            "letters, digits, '.' or '-'), without credentials or a port"
        )
    segments = [s for s in key.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"{value!r}: an object key may not hold '.' or '..' segments")
    return f"{scheme}://{bucket}/{'/'.join(segments)}".rstrip("/")


_ONE_SLASH = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")


def to_root(value: str | Path) -> str | Path:
    """A data root as the spec keeps it: a URI's canonical text, else a ``Path``.
    ``s3:/bucket/x`` (one slash, as ``Path`` folds a URI) is refused, not taken for a
    folder named ``s3:``."""
    if isinstance(value, Path):
        return value
    folded = _ONE_SLASH.match(value.strip())
    if folded and folded.group(1).lower() in URI_SCHEMES:
        fixed = f"{folded.group(1)}://{value.strip()[folded.end() :]}"
        raise ValueError(f"{value!r}: one '/' after '{folded.group(1)}:'; did you mean {fixed!r}?")
    return parse_data_uri(value) if is_uri(value) else Path(value)


def join_uri(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended, one ``/`` between each."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])


def root_name(root: str | Path) -> str:
    """The last segment of a root (folder name, or the prefix's last part)."""
    return str(root).rstrip("/").rsplit("/", 1)[-1]
