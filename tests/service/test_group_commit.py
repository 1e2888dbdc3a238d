"""Group commit: concurrent submissions share a transaction, keep their order and their
idempotency, and all fail (none is lost silently) when the store refuses the batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from service.core import store
from service.core.group_commit import GroupCommit
from service.core.store import NewJob


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield engine
    engine.dispose()


def count_commits(engine: Engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine, "commit")
    def _on_commit(_conn: object) -> None:
        commits[0] += 1

    return commits


async def submit_all(writer: GroupCommit, new: list[NewJob]) -> list[tuple[store.Job, bool]]:
    return await asyncio.gather(*(writer.create_job(n) for n in new))


def test_concurrent_submissions_share_one_commit_in_order(engine: Engine) -> None:
    woken = []
    writer = GroupCommit(engine, on_created=lambda: woken.append(1))
    commits = count_commits(engine)
    new = [NewJob(f"job-{i}", {"name": f"job-{i}"}) for i in range(50)]
    results = asyncio.run(submit_all(writer, new))

    assert commits[0] == 1 and woken == [1]
    assert [job.name for job, _ in results] == [n.name for n in new]
    assert all(created for _, created in results)
    with engine.connect() as conn:
        stored, total = store.list_jobs(conn=conn, limit=100, oldest_first=True)
    assert total == 50 and len({job.id for job in stored}) == 50
    # queue order is submission order: the scheduler starts the oldest first
    assert [job.name for job in stored] == [n.name for n in new]
    assert all(job.state == "PENDING" and job.spec == {"name": job.name} for job in stored)


def test_one_key_twice_in_a_batch_makes_one_job(engine: Engine) -> None:
    writer = GroupCommit(engine)
    new = [NewJob("a", {"a": 1}, "key-1", "h1"), NewJob("a", {"a": 1}, "key-1", "h1")]
    (first, created_first), (second, created_second) = asyncio.run(submit_all(writer, new))
    assert created_first and not created_second and second.id == first.id
    with engine.connect() as conn:
        assert store.count_jobs(conn=conn, states=["PENDING"]) == 1


def test_key_stored_by_another_writer_mid_batch_is_replayed(engine: Engine) -> None:
    """Another replica stores the same key between this batch's lookup and its INSERT: the
    unique constraint refuses the batch, which is retried row by row; the other rows are
    stored and the keyed one gets the other writer's job."""
    with engine.connect() as conn:
        theirs, _ = store.create_job(conn=conn, name="theirs", spec={}, body_hash="h")
    other = store.make_engine(str(engine.url))
    fired = []

    @event.listens_for(engine, "before_cursor_execute")
    def _race(conn, cursor, statement, params, context, executemany) -> None:
        if statement.startswith("INSERT INTO jobs") and not fired:
            fired.append(1)
            with other.connect() as rival:
                rival.execute(
                    text("UPDATE jobs SET idempotency_key = 'race' WHERE id = :id"),
                    {"id": theirs.id},
                )
                rival.commit()

    writer = GroupCommit(engine)
    new = [NewJob("mine", {}, "race", "h"), NewJob("plain", {})]
    (keyed, keyed_created), (plain, plain_created) = asyncio.run(submit_all(writer, new))
    other.dispose()
    assert fired and not keyed_created and keyed.id == theirs.id
    assert plain_created
    with engine.connect() as conn:
        assert store.get_job(conn=conn, job_id=plain.id) is not None
        assert store.count_jobs(conn=conn, states=["PENDING"]) == 2


def test_store_failure_fails_every_waiter(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("DROP TABLE jobs"))
        conn.commit()
    woken = []
    writer = GroupCommit(engine, on_created=lambda: woken.append(1))

    async def attempt() -> list[object]:
        calls = [writer.create_job(NewJob(f"j{i}", {})) for i in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(attempt())
    assert len(outcomes) == 5 and all(isinstance(o, Exception) for o in outcomes)
    assert "jobs" in str(outcomes[0]) and not woken
