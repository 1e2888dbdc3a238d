"""A job's ``driver.log`` over HTTP: the whole file or its tail, and a follow stream that
yields what the driver appends until the job reaches a final state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from service.processes import log_tail

__all__ = ["follow", "snapshot"]


def snapshot(path: Path, tail: int | None) -> tuple[str, int]:
    """``(text, size)``: the log (or its last ``tail`` lines) and the file size it was read
    at; a follow stream continues from ``size``, so nothing is lost or repeated."""
    size = path.stat().st_size if path.exists() else 0
    if tail is not None:
        text = log_tail(path, lines=tail, max_bytes=max(16384, tail * 400))
        return (text + "\n" if text else ""), size
    try:
        with open(path, "rb") as fh:
            return fh.read(size).decode("utf-8", errors="replace"), size
    except FileNotFoundError:
        return "", size


async def follow(
    path: Path,
    start: int,
    *,
    finished: Callable[[], Awaitable[bool]],
    disconnected: Callable[[], Awaitable[bool]],
    poll_s: float,
) -> AsyncIterator[bytes]:
    """Bytes appended to ``path`` after offset ``start``, until ``finished()`` is true and
    the file has nothing more, or the client went away."""
    offset = start
    while True:
        done = await finished()
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            yield chunk
        if done and not chunk:
            return
        if await disconnected():
            return
        await asyncio.sleep(poll_s)
