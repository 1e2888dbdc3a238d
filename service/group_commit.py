"""Group commit of submissions: the INSERTs of concurrent ``POST /v1/experiments`` requests
go to the job store in one transaction per event-loop turn.

A commit costs more than the row it stores (SQLAlchemy's execution path plus the WAL
write on SQLite, about 0.3 ms of CPU per submission on the 2-core benchmark machine). When
many clients submit at once, their requests are parsed in the same turn of the event loop;
each one queues its row and awaits a future, the first schedules :meth:`GroupCommit._flush`
with ``call_soon``, and that flush stores the whole queue with :func:`store.create_jobs`. A
request is answered only after the commit that holds its job, so a 201 still means stored.
A lone request is a batch of one: it waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Engine

from service import store
from service.store import Job, NewJob

__all__ = ["GroupCommit"]


class GroupCommit:
    """Stores submissions in batches; ``on_created`` runs after a batch created any job."""

    MAX_BATCH = 256  # rows per transaction; more wait for the next turn of the loop

    def __init__(self, engine: Engine, *, on_created: Callable[[], None] = lambda: None):
        self.engine = engine
        self.on_created = on_created
        self._queue: list[tuple[NewJob, asyncio.Future[tuple[Job, bool]]]] = []

    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """``(job, created)`` once the transaction holding ``new`` committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Job, bool]] = loop.create_future()
        self._queue.append((new, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
        if self._queue:
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            with self.engine.connect() as conn:
                results = store.create_jobs(conn=conn, new=[new for new, _ in batch])
        except Exception as exc:  # the store is down or refused the batch: every waiter fails
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a client that went away still has its job stored
                future.set_result(result)
        if any(created for _, created in results):
            self.on_created()
