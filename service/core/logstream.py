"""A job's ``driver.log`` over HTTP: the whole file or its tail, and a follow stream that
yields what the driver appends until the job reaches a final state.

File reads run in worker threads (a log may be large) and come in bounded chunks. A follow
stream that has had no new output for ``heartbeat_s`` gets a status line
(``[bioprop] job <id> is PENDING: waiting for a slot ...``), so the client and any proxy
see the connection live and the user sees why nothing happens; after ``idle_s`` without
output it says so and ends (follow again to resume). Both lines start with ``[bioprop]``
and on a line of their own; the file itself is never changed.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio.to_thread

from service.backends.processes import log_tail

__all__ = ["CHUNK", "follow", "heartbeats", "read_range", "size_of", "tail_text"]

CHUNK = 1 << 16


def size_of(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def tail_text(path: Path, lines: int) -> str:
    """The last ``lines`` lines, newline-terminated (empty when there is no log yet)."""
    text = log_tail(path, lines=lines, max_bytes=max(16384, lines * 400))
    return text + "\n" if text else ""


def _read(path: Path, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)
    except FileNotFoundError:
        return b""


async def read_range(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` of ``path`` in chunks of at most :data:`CHUNK`."""
    offset = start
    while offset < end:
        chunk = await anyio.to_thread.run_sync(_read, path, offset, min(CHUNK, end - offset))
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def _status_line(text: str, at_line_start: bool) -> bytes:
    """``[bioprop] <text>`` on a line of its own."""
    return (("" if at_line_start else "\n") + f"[bioprop] {text}\n").encode()


def _quiet(words: str, seconds: float, closing: bool = False) -> str:
    text = f"{words}; no new output for {seconds:.0f} s"
    return text + (", closing this stream (follow again to resume)" if closing else "")


async def follow(
    path: Path,
    start: int,
    *,
    status: Callable[[], Awaitable[tuple[bool, str]]],
    disconnected: Callable[[], Awaitable[bool]],
    poll_s: float,
    heartbeat_s: float,
    idle_s: float,
    status_every_s: float = 1.0,
) -> AsyncIterator[bytes]:
    """Bytes appended to ``path`` after offset ``start`` until the job is final and the file
    has nothing more, the client went away, or ``idle_s`` passed without output.

    Every ``poll_s`` the file's size is checked (a ``stat``, no thread) and what grew is
    read in a worker thread; while nothing grows, ``status()`` (a store read) is asked at
    most every ``status_every_s``: it answers ``(final, words)``, whether the job has ended
    and how to describe its state in a heartbeat line."""
    offset = start
    quiet_since = last_beat = time.monotonic()
    last_status = -math.inf
    at_line_start = True

    def line(text: str) -> bytes:
        return _status_line(text, at_line_start)

    while True:
        if size_of(path) > offset:
            chunk = await anyio.to_thread.run_sync(_read, path, offset, CHUNK)
            offset += len(chunk)
            at_line_start = chunk.endswith(b"\n")
            quiet_since = last_beat = time.monotonic()
            yield chunk
            if len(chunk) == CHUNK:
                continue  # more is waiting: no sleep
        elif time.monotonic() - last_status >= status_every_s:
            final, words = await status()
            last_status = time.monotonic()
            if final:  # what the driver wrote before it ended, then stop
                async for rest in read_range(path, offset, size_of(path)):
                    offset += len(rest)
                    yield rest
                return
            now = time.monotonic()
            if now - quiet_since >= idle_s:
                yield line(_quiet(words, now - quiet_since, closing=True))
                return
            if now - last_beat >= heartbeat_s:
                yield line(_quiet(words, now - quiet_since))
                at_line_start = True
                last_beat = now
        if await disconnected():
            return
        await asyncio.sleep(poll_s)


async def heartbeats(
    chunks: AsyncIterator[bytes], *, words: str, heartbeat_s: float, idle_s: float
) -> AsyncIterator[bytes]:
    """``chunks`` as they come (a stream someone else produces, e.g. Ray's log websocket)
    with :func:`follow`'s status lines: ``[bioprop] <words>; no new output for N s`` after
    every ``heartbeat_s`` without a chunk, and the stream closed after ``idle_s`` without
    one (follow again to resume)."""
    source = aiter(chunks)
    pending = asyncio.ensure_future(anext(source))
    quiet_since = last_beat = time.monotonic()
    at_line_start = True
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=max(0.01, heartbeat_s / 4))
            now = time.monotonic()
            if pending in done:
                try:
                    chunk = pending.result()
                except StopAsyncIteration:
                    return
                quiet_since = last_beat = now
                at_line_start = chunk.endswith(b"\n")
                yield chunk
                pending = asyncio.ensure_future(anext(source))
                continue
            if now - quiet_since >= idle_s:
                yield _status_line(_quiet(words, now - quiet_since, closing=True), at_line_start)
                return
            if now - last_beat >= heartbeat_s:
                yield _status_line(_quiet(words, now - quiet_since), at_line_start)
                at_line_start, last_beat = True, now
    finally:
        pending.cancel()
