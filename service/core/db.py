"""Job-store access from async endpoints: store work runs in worker threads, never on the
event loop, and waits a bounded time for a connection.

A checkout from an exhausted pool blocks the thread that asks; on the event loop that
stalls every request (``/healthz`` included) until a connection comes back, which, when the
holders need the loop to give theirs back, is never. So endpoints hand their store work to
:meth:`Store.run` (or :meth:`Store.call`): it takes one of ``slots`` (the pool's
``STORE_POOL_SIZE`` less one for the scheduler thread and one for ``/healthz``, which has a
:class:`Store` of its own) within ``STORE_TIMEOUT_S``
and runs the work in a thread of its own limiter, where the checkout cannot wait; a request
that gets no slot in time raises :class:`StoreBusy`, answered 503 with ``Retry-After``.
The store's own pool timeout is the same bound, for the scheduler's thread and for any
checkout outside :class:`Store`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Connection, Engine

__all__ = ["Store", "StoreBusy"]

T = TypeVar("T")


class StoreBusy(RuntimeError):
    """No job-store connection within the timeout (answered 503)."""


class Store:
    """Runs job-store work in worker threads, at most ``slots`` at once."""

    def __init__(self, engine: Engine, *, slots: int, timeout_s: float) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self._slots = anyio.CapacityLimiter(slots)
        self._threads = anyio.CapacityLimiter(slots)

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread once a slot is free; ``fn`` checks out
        its own connection (at most one)."""
        try:
            with anyio.fail_after(self.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise StoreBusy(
                f"the job store had no free connection for {self.timeout_s:g} s; retry later"
            ) from None
        try:
            return await anyio.to_thread.run_sync(
                lambda: fn(*args, **kwargs), limiter=self._threads
            )
        finally:
            self._slots.release()

    async def run(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(conn=<connection>, **kwargs)`` in a worker thread (see :meth:`call`); the
        connection is closed (its transaction ended) when ``fn`` returns."""

        def work() -> T:
            with self.engine.connect() as conn:
                return fn(conn=conn, **kwargs)

        return await self.call(work)

    def connect(self) -> Connection:
        return self.engine.connect()
