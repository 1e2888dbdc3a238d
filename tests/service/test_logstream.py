"""Status lines on a log stream someone else produces (a Ray job's log websocket): the
chunks pass unchanged, a quiet stream gets ``[bioprop]`` heartbeats on lines of their own,
and a stream quiet for ``idle_s`` is closed with a line that says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from service.core.logstream import heartbeats


async def _source(parts: list[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    for pause, data in parts:
        await asyncio.sleep(pause)
        yield data


def _collect(parts, heartbeat_s: float, idle_s: float) -> list[bytes]:
    async def run() -> list[bytes]:
        stream = heartbeats(_source(parts), words="job j is RUNNING", heartbeat_s=heartbeat_s,
                            idle_s=idle_s)  # fmt: skip
        return [chunk async for chunk in stream]

    return asyncio.run(run())


def test_quiet_stream_gets_heartbeats_between_chunks_on_their_own_lines() -> None:
    got = _collect([(0, b"epoch 1"), (0.5, b"epoch 2\n")], heartbeat_s=0.2, idle_s=10)
    assert got[0] == b"epoch 1" and got[-1] == b"epoch 2\n"
    beats = got[1:-1]
    assert 1 <= len(beats) <= 3, got
    assert beats[0].startswith(b"\n[bioprop] job j is RUNNING; no new output for ")
    assert all(b.endswith(b" s\n") for b in beats)
    assert all(b.startswith(b"[bioprop]") for b in beats[1:])  # already on a new line


def test_stream_quiet_for_idle_s_is_closed_with_a_line_saying_so() -> None:
    got = _collect([(0, b"hello\n"), (30, b"never seen\n")], heartbeat_s=0.1, idle_s=0.5)
    assert got[0] == b"hello\n" and b"never seen\n" not in got
    assert got[-1].endswith(b"closing this stream (follow again to resume)\n")


def test_a_stream_that_ends_ends_without_a_status_line() -> None:
    assert _collect([(0, b"a\n"), (0, b"b\n")], heartbeat_s=0.1, idle_s=1) == [b"a\n", b"b\n"]
