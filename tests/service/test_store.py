"""The SQLite job store: conditional transitions, idempotency keys, paging."""

from __future__ import annotations

from pathlib import Path

from service import store


def test_transitions_are_conditional(tmp_path: Path) -> None:
    sessions = store.make_sessionmaker(store.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    with sessions() as session:
        job, created = store.create_job(session=session, name="a", spec={"name": "a"})
        assert created and job.state == "PENDING"
        assert store.transition(
            session=session, job_id=job.id, from_states=["PENDING"], to_state="CANCELLED"
        )
        # the scheduler's claim loses to the cancel that came first
        assert not store.transition(
            session=session, job_id=job.id, from_states=["PENDING"], to_state="RUNNING"
        )
        done = store.get_job(session=session, job_id=job.id)
        assert done.state == "CANCELLED" and done.finished_at is not None


def test_idempotency_key_and_paging(tmp_path: Path) -> None:
    sessions = store.make_sessionmaker(store.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    with sessions() as session:
        first, created = store.create_job(
            session=session, name="x", spec={}, idempotency_key="k", body_hash="h1"
        )
        again, created_again = store.create_job(
            session=session, name="x", spec={}, idempotency_key="k", body_hash="h2"
        )
        assert created and not created_again and again.id == first.id and again.body_hash == "h1"
        for i in range(4):
            store.create_job(session=session, name=f"n{i % 2}", spec={})
        page, total = store.list_jobs(session=session, limit=2, offset=1)
        assert total == 5 and len(page) == 2
        _, named = store.list_jobs(session=session, name="n1")
        assert named == 2
        oldest, _ = store.list_jobs(session=session, limit=1, oldest_first=True)
        assert oldest[0].id == first.id
        assert store.count_jobs(session=session, states=["PENDING"]) == 5
