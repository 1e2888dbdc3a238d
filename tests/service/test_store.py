"""The SQLite job store: conditional transitions, idempotency keys, paging."""

from __future__ import annotations

from pathlib import Path

from service.core import store


def test_transitions_are_conditional(tmp_path: Path) -> None:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    with engine.connect() as conn:
        job, created = store.create_job(conn=conn, name="a", spec={"name": "a"})
        assert created and job.state == "PENDING"
        assert store.transition(
            conn=conn, job_id=job.id, from_states=["PENDING"], to_state="CANCELLED"
        )
        # the scheduler's claim loses to the cancel that came first
        assert not store.transition(
            conn=conn, job_id=job.id, from_states=["PENDING"], to_state="RUNNING"
        )
        done = store.get_job(conn=conn, job_id=job.id)
        assert done.state == "CANCELLED" and done.finished_at is not None


def test_idempotency_key_and_paging(tmp_path: Path) -> None:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    with engine.connect() as conn:
        first, created = store.create_job(
            conn=conn, name="x", spec={}, idempotency_key="k", body_hash="h1"
        )
        again, created_again = store.create_job(
            conn=conn, name="x", spec={}, idempotency_key="k", body_hash="h2"
        )
        assert created and not created_again and again.id == first.id and again.body_hash == "h1"
        for i in range(4):
            store.create_job(conn=conn, name=f"n{i % 2}", spec={})
        page, total = store.list_jobs(conn=conn, limit=2, offset=1)
        assert total == 5 and len(page) == 2
        _, named = store.list_jobs(conn=conn, name="n1")
        assert named == 2
        oldest, _ = store.list_jobs(conn=conn, limit=1, oldest_first=True)
        assert oldest[0].id == first.id
        assert store.count_jobs(conn=conn, states=["PENDING"]) == 5
