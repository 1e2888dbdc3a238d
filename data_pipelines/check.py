"""Finding the image files a decoder cannot read, to name them in errors.

DALI reports a failed decode without the file name. When a pipeline fails, the loader
calls :func:`explain_decode_error`, which decodes the split's files with PIL (in full,
so truncated files fail too) and raises an error naming the first bad ones. PNG or
CMYK content behind a ``.JPEG`` name (real ImageNet has both) is not an error: DALI's
decoder sniffs the format and converts CMYK to RGB.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

__all__ = ["DecodeError", "explain_decode_error", "find_undecodable"]

log = logging.getLogger(__name__)


class DecodeError(ValueError):
    """Image files that cannot be decoded; ``paths`` names them."""

    def __init__(self, message: str, paths: list[Path | str]) -> None:
        super().__init__(message)
        self.paths = paths


Source = Path | tuple[str, bytes]  # a file, or (name, bytes) of a member of a packed shard


def _bad(source: Source) -> str | None:
    try:
        opened = source if isinstance(source, Path) else io.BytesIO(source[1])
        with Image.open(opened) as img:
            img.load()
        return None
    except Exception as exc:  # PIL raises many types for broken files
        return f"{type(exc).__name__}: {exc}"


def find_undecodable(
    sources: Iterable[Source], *, limit: int = 5, threads: int = 4
) -> dict[Path | str, str]:
    """Up to ``limit`` files (or packed members) PIL cannot decode, with the reason."""
    found: dict[Path | str, str] = {}
    it = iter(sources)
    with ThreadPoolExecutor(threads) as pool:
        while len(found) < limit:
            part = list(itertools.islice(it, 256))
            if not part:
                break
            for source, reason in zip(part, pool.map(_bad, part), strict=True):
                if reason is not None:
                    found[source if isinstance(source, Path) else source[0]] = reason
    return dict(list(found.items())[:limit])


def explain_decode_error(exc: Exception, paths: Iterable[Source]) -> Exception:
    """A :class:`DecodeError` naming the undecodable files, or ``exc`` if none is found."""
    if "decoder" not in str(exc) and "nvImageCodec" not in str(exc):
        return exc
    bad = find_undecodable(paths)
    if not bad:
        return exc
    lines = "\n".join(f"  {path}: {reason}" for path, reason in bad.items())
    return DecodeError(
        f"cannot decode {len(bad)} image file(s) (remove or replace them):\n{lines}", list(bad)
    )
