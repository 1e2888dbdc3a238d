"""Job store: one SQLAlchemy 2 ``jobs`` table, SQLite by default, PostgreSQL by URL.

Every function is keyword-only and takes the ``session`` to work in. State changes go
through :func:`transition`, a conditional UPDATE (``WHERE state IN (...)``), so two
writers (an API request and the scheduler, or two service replicas) never both win.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "Job",
    "JobState",
    "count_jobs",
    "create_job",
    "get_job",
    "get_job_by_idempotency_key",
    "list_jobs",
    "make_engine",
    "make_sessionmaker",
    "oldest_pending",
    "transition",
    "update_job",
]


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


ACTIVE_STATES = (JobState.RUNNING, JobState.CANCELLING)
FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pid: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    body_hash: Mapped[str | None] = mapped_column(String(64))
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


_INSERT_JOB = insert(Job.__table__)


def make_engine(url: str) -> Engine:
    """Engine for ``url`` with the jobs table created; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def create_job(
    *,
    session: Session,
    name: str,
    spec: dict[str, Any],
    idempotency_key: str | None = None,
    body_hash: str | None = None,
) -> tuple[Job, bool]:
    """Insert a PENDING job; returns ``(job, created)``.

    With an ``idempotency_key`` already stored, returns the stored job and ``created=False``
    (the caller compares ``body_hash``); a concurrent insert with the same key is resolved
    by the table's unique constraint.
    """
    if idempotency_key is not None:
        existing = get_job_by_idempotency_key(session=session, key=idempotency_key)
        if existing is not None:
            return existing, False
    row = dict(
        id=new_job_id(),
        name=name,
        state=JobState.PENDING.value,
        spec=spec,
        created_at=utcnow(),
        idempotency_key=idempotency_key,
        body_hash=body_hash,
    )
    try:
        # one prebuilt Core INSERT with bound values: the ORM's unit of work, or building
        # the statement per call, costs more than the insert itself
        session.execute(_INSERT_JOB, row)
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        existing = get_job_by_idempotency_key(session=session, key=idempotency_key)
        if existing is None:
            raise
        return existing, False
    return Job(**row), True


def get_job(*, session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


def get_job_by_idempotency_key(*, session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).first()


def _states(states: Iterable[JobState | str]) -> list[str]:
    return [JobState(s).value for s in states]


def list_jobs(
    *,
    session: Session,
    states: Iterable[JobState | str] | None = None,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
    oldest_first: bool = False,
) -> tuple[list[Job], int]:
    """Jobs newest first (or oldest first), filtered by state and name; returns ``(page, total)``."""
    query = select(Job)
    if states:
        query = query.where(Job.state.in_(_states(states)))
    if name:
        query = query.where(Job.name == name)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = (
        (Job.created_at.asc(), Job.id.asc())
        if oldest_first
        else (Job.created_at.desc(), Job.id.desc())
    )
    page = list(session.scalars(query.order_by(*order).limit(limit).offset(offset)))
    return page, total


def oldest_pending(*, session: Session, limit: int) -> list[Job]:
    """Up to ``limit`` PENDING jobs, oldest first (the scheduler's queue order)."""
    query = (
        select(Job)
        .where(Job.state == JobState.PENDING.value)
        .order_by(Job.created_at.asc(), Job.id.asc())
        .limit(limit)
    )
    return list(session.scalars(query))


def count_jobs(*, session: Session, states: Iterable[JobState | str]) -> int:
    query = select(func.count()).select_from(Job).where(Job.state.in_(_states(states)))
    return session.scalar(query) or 0


def transition(
    *,
    session: Session,
    job_id: str,
    from_states: Iterable[JobState | str],
    to_state: JobState | str,
    **fields: Any,
) -> bool:
    """Set ``state=to_state`` (and ``fields``) only if the job is in ``from_states``; commit."""
    values = {"state": JobState(to_state).value, **fields}
    if JobState(to_state) in FINAL_STATES and "finished_at" not in values:
        values["finished_at"] = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(_states(from_states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def update_job(*, session: Session, job_id: str, **fields: Any) -> None:
    """Set ``fields`` on a job regardless of its state; commit."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(**fields)
        .execution_options(synchronize_session=False)
    )
    session.commit()
