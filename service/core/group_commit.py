"""Group commit of submissions: the INSERTs of concurrent ``POST /v1/experiments`` requests
go to the job store in one transaction per batch, in a worker thread.

A commit costs more than the row it stores (SQLAlchemy's execution path plus the WAL
write on SQLite, about 0.3 ms of CPU per submission on the 2-core benchmark machine). Each
request queues its row and awaits a future; the first one starts a drain task, which (after
the current turn of the event loop, so the requests parsed in that turn join) stores the
queue with :func:`store.create_jobs` through :meth:`service.core.db.Store.run`, off the event
loop; submissions that arrive meanwhile make the next batch. A request is answered only
after the commit that holds its job, so a 201 still means stored. A lone request is a batch
of one: it waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Engine

from service.core import store
from service.core.db import Store
from service.core.store import Job, NewJob

__all__ = ["GroupCommit"]


class GroupCommit:
    """Stores submissions in batches; ``on_created`` runs after a batch created any job."""

    MAX_BATCH = 256  # rows per transaction; more wait for the next batch

    def __init__(self, db: Store | Engine, *, on_created: Callable[[], None] = lambda: None):
        self.db = db if isinstance(db, Store) else Store(db, slots=1, timeout_s=30.0)
        self.on_created = on_created
        self._queue: list[tuple[NewJob, asyncio.Future[tuple[Job, bool]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """``(job, created)`` once the transaction holding ``new`` committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Job, bool]] = loop.create_future()
        self._queue.append((new, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the requests parsed in this turn join the first batch
            while self._queue:
                batch = self._queue[: self.MAX_BATCH]
                self._queue = self._queue[self.MAX_BATCH :]
                try:
                    results = await self.db.run(store.create_jobs, new=[n for n, _ in batch])
                except Exception as exc:  # store down or busy, batch refused: all waiters fail
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # a client that went away still has its job stored
                        future.set_result(result)
                if any(created for _, created in results):
                    self.on_created()
        finally:
            self._drainer = None
