"""Job store: one SQLAlchemy Core ``jobs`` table, SQLite by default, PostgreSQL by URL.

Every function is keyword-only and takes the ``conn`` (a :class:`sqlalchemy.Connection`)
to work in; writers commit, readers leave the transaction for the caller to end (closing
the connection ends it). State changes go through :func:`transition`, a conditional UPDATE
(``WHERE state IN (...)``), so two writers (an API request and the scheduler, or two service
replicas) never both win.

Core, not the ORM: the API's hot paths are one INSERT (submit) and one primary-key SELECT
(status). Through an ORM ``Session`` those cost 0.5-0.6 ms of CPU each on the 2-core
benchmark machine, through a Core ``Connection`` with prebuilt statements about 0.1-0.3 ms
(timed in-process, docs/benchmarks.md "Control plane"). Rows come back as frozen
:class:`Job` records.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from trainers.contracts import FINAL_STATES, JobState

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "Job",
    "JobState",
    "NewJob",
    "active_jobs",
    "checkpoint",
    "count_jobs",
    "create_job",
    "create_jobs",
    "get_job",
    "get_job_by_idempotency_key",
    "is_final",
    "jobs",
    "list_jobs",
    "make_engine",
    "oldest_pending",
    "pending_heads",
    "transition",
    "update_job",
]


# JobState (the column stores its value) and FINAL_STATES are the driver/service contract's
ACTIVE_STATES = (JobState.RUNNING, JobState.CANCELLING)


def is_final(state: JobState) -> bool:
    return state in FINAL_STATES


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


metadata = MetaData()

# the schema the ORM version of this table created (same column types and index names), so
# stores written before the move to Core open unchanged
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("pid", Integer),
    Column("error", Text),
    Column("idempotency_key", String(255), unique=True),
    Column("body_hash", String(64)),
    Column("mlflow_parent_run_id", String(64)),
    Column("result", JSON),
    # added by migrate() to older stores (NULL on their rows)
    Column("owner", String(200), index=True),
    Column("data_root", Text),  # data.root as resolved at admission
    Column("priority", Integer),  # within its owner's queue, higher first; NULL = 0
)


@dataclass(frozen=True, slots=True)
class Job:
    """One row of ``jobs``."""

    id: str
    name: str
    state: JobState
    spec: dict[str, Any] | None  # None only from list_jobs(with_spec=False)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    mlflow_parent_run_id: str | None = None
    result: dict[str, Any] | None = None
    owner: str | None = None
    data_root: str | None = None
    priority: int | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Job:
        values = dict(row._mapping)
        values["state"] = JobState(values["state"])
        values.setdefault("spec", None)
        return cls(**values)


_TICK = timedelta(microseconds=1)
_INSERT_COLUMNS = (
    "id",
    "name",
    "state",
    "spec",
    "created_at",
    "idempotency_key",
    "body_hash",
    "owner",
    "data_root",
    "priority",
)
_INSERT_JOB = insert(jobs)
_BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))
_BY_KEY = select(jobs).where(jobs.c.idempotency_key == bindparam("key"))


def make_engine(url: str, *, pool_size: int = 10, pool_timeout: float = 30.0) -> Engine:
    """Engine for ``url`` with the jobs table created; SQLite gets WAL and a busy timeout.

    The pool holds at most ``pool_size`` connections (no overflow, so callers can size what
    they use against it) and a checkout waits at most ``pool_timeout`` seconds."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool: dict[str, Any] = (
            {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": pool_timeout}
            if path and path != ":memory:"
            else {}  # one in-memory database per connection thread: no queue to bound
        )
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # no checkpoint inside a commit: a checkpoint fsyncs the database and the WAL
            # (5-15 ms here), which would stall the request loop; ``checkpoint`` runs them
            # from the scheduler's thread instead
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()
    else:
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout,
            pool_pre_ping=True,
        )
    metadata.create_all(engine)
    migrate(engine)
    return engine


ADDED_COLUMNS = ("owner", "data_root", "priority")  # nullable columns newer than the first table


def migrate(engine: Engine) -> None:
    """Bring a store written by an older version up to this table: add the columns of
    :data:`ADDED_COLUMNS` it lacks (and the owner index). Additive only, one transaction,
    safe to run on every start and from several replicas at once (SQLite and PostgreSQL)."""
    have = {c["name"] for c in inspect(engine).get_columns("jobs")}
    missing = [name for name in ADDED_COLUMNS if name not in have]
    if not missing:
        return
    try:
        with engine.begin() as conn:
            for name in missing:
                kind = jobs.c[name].type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_jobs_owner ON jobs (owner)")
    except (OperationalError, ProgrammingError):
        # another replica added them first
        have = {c["name"] for c in inspect(engine).get_columns("jobs")}
        if not set(ADDED_COLUMNS) <= have:
            raise


def checkpoint(engine: Engine) -> None:
    """Copy committed WAL frames into a SQLite database file (PASSIVE: never waits for
    readers or writers); a no-op on other databases. SQLite releases the GIL while it
    writes and syncs, so a background thread can run this without stalling requests."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


class NewJob(NamedTuple):
    """A submission to store: the validated spec (as JSON) and its idempotency fields."""

    name: str
    spec: dict[str, Any]
    idempotency_key: str | None = None
    body_hash: str | None = None
    owner: str | None = None
    data_root: str | None = None
    priority: int = 0


def create_jobs(*, conn: Connection, new: Sequence[NewJob]) -> list[tuple[Job, bool]]:
    """Insert PENDING jobs in one transaction and commit (group commit); returns one
    ``(job, created)`` per submission, in order.

    A submission whose ``idempotency_key`` is already stored, or was taken by an earlier
    submission of the same batch, gets that job and ``created=False`` (the caller compares
    ``body_hash``). When the batch's INSERT hits the unique key (a concurrent writer stored
    the same key first) the batch is retried one submission at a time, so each gets the
    stored job instead of an error. ``created_at`` follows the order of ``new``: the
    scheduler starts jobs oldest first.
    """
    keyed: dict[str, Job] = {}
    keys = {n.idempotency_key for n in new if n.idempotency_key is not None}
    if keys:
        for row in conn.execute(select(jobs).where(jobs.c.idempotency_key.in_(keys))):
            keyed[row.idempotency_key] = Job.from_row(row)
    out: list[tuple[Job, bool]] = []
    rows: list[dict[str, Any]] = []
    created_at = utcnow() - _TICK
    for n in new:
        if n.idempotency_key is not None and n.idempotency_key in keyed:
            out.append((keyed[n.idempotency_key], False))
            continue
        # strictly increasing within the batch (the clock has microsecond steps)
        created_at = max(utcnow(), created_at + _TICK)
        job = Job(
            id=new_job_id(),
            name=n.name,
            state=JobState.PENDING,
            spec=n.spec,
            created_at=created_at,
            idempotency_key=n.idempotency_key,
            body_hash=n.body_hash,
            owner=n.owner,
            data_root=n.data_root,
            priority=n.priority,
        )
        if n.idempotency_key is not None:
            keyed[n.idempotency_key] = job
        rows.append({c: getattr(job, c) for c in _INSERT_COLUMNS} | {"state": job.state.value})
        out.append((job, True))
    if not rows:
        return out
    try:
        # one prebuilt Core INSERT, executemany: per submission this costs a fraction of a
        # transaction of its own (``bioprop bench service``)
        conn.execute(_INSERT_JOB, rows)
        conn.commit()
    except IntegrityError:
        conn.rollback()
        if len(new) > 1:
            return [create_jobs(conn=conn, new=[n])[0] for n in new]
        key = new[0].idempotency_key
        existing = get_job_by_idempotency_key(conn=conn, key=key) if key is not None else None
        if existing is None:
            raise
        return [(existing, False)]
    return out


def create_job(
    *,
    conn: Connection,
    name: str,
    spec: dict[str, Any],
    idempotency_key: str | None = None,
    body_hash: str | None = None,
    owner: str | None = None,
) -> tuple[Job, bool]:
    """Insert one PENDING job and commit; returns ``(job, created)`` (see :func:`create_jobs`)."""
    new = NewJob(name, spec, idempotency_key, body_hash, owner)
    return create_jobs(conn=conn, new=[new])[0]


def get_job(*, conn: Connection, job_id: str) -> Job | None:
    row = conn.execute(_BY_ID, {"job_id": job_id}).first()
    return Job.from_row(row) if row is not None else None


def get_job_by_idempotency_key(*, conn: Connection, key: str) -> Job | None:
    row = conn.execute(_BY_KEY, {"key": key}).first()
    return Job.from_row(row) if row is not None else None


def _states(states: Iterable[JobState | str]) -> list[str]:
    return [JobState(s).value for s in states]


def list_jobs(
    *,
    conn: Connection,
    states: Iterable[JobState | str] | None = None,
    name: str | None = None,
    owner: str | None = None,
    limit: int = 50,
    offset: int = 0,
    oldest_first: bool = False,
    with_spec: bool = True,
) -> tuple[list[Job], int]:
    """Jobs newest first (or oldest first), filtered by state, name and owner; returns
    ``(page, total)``.
    ``with_spec=False`` leaves the spec column unread (``Job.spec`` None): specs are the
    bulk of a row (up to the body bound each)."""
    columns = [c for c in jobs.c if with_spec or c.name != "spec"]
    filters = []
    if states:
        filters.append(jobs.c.state.in_(_states(states)))
    if name:
        filters.append(jobs.c.name == name)
    if owner is not None:
        filters.append(jobs.c.owner == owner)
    query = select(*columns).where(*filters)
    total = conn.scalar(select(func.count()).select_from(jobs).where(*filters)) or 0
    order = (
        (jobs.c.created_at.asc(), jobs.c.id.asc())
        if oldest_first
        else (jobs.c.created_at.desc(), jobs.c.id.desc())
    )
    rows = conn.execute(query.order_by(*order).limit(limit).offset(offset))
    return [Job.from_row(row) for row in rows], total


def active_jobs(*, conn: Connection) -> list[Job]:
    """Every RUNNING or CANCELLING job (those holding a driver and its resources), oldest
    first; their number is bounded by ``MAX_CONCURRENT_JOBS`` per service replica."""
    query = (
        select(jobs)
        .where(jobs.c.state.in_(_states(ACTIVE_STATES)))
        .order_by(jobs.c.created_at.asc(), jobs.c.id.asc())
    )
    return [Job.from_row(row) for row in conn.execute(query)]


def oldest_pending(*, conn: Connection, limit: int) -> list[Job]:
    """Up to ``limit`` PENDING jobs, oldest first (the scheduler's queue order)."""
    query = (
        select(jobs)
        .where(jobs.c.state == JobState.PENDING.value)
        .order_by(jobs.c.created_at.asc(), jobs.c.id.asc())
        .limit(limit)
    )
    return [Job.from_row(row) for row in conn.execute(query)]


def pending_heads(*, conn: Connection, per_owner: int) -> list[Job]:
    """The first ``per_owner`` PENDING jobs of every owner's queue (highest ``priority``
    first, then oldest), in that order within each owner: what the scheduler's fair share
    chooses from (one query, a window over the owners' queues)."""
    priority = func.coalesce(jobs.c.priority, 0)
    order = (priority.desc(), jobs.c.created_at.asc(), jobs.c.id.asc())
    rank = func.row_number().over(partition_by=jobs.c.owner, order_by=order).label("rank")
    queue = select(jobs, rank).where(jobs.c.state == JobState.PENDING.value).subquery()
    query = (
        select(*[queue.c[c.name] for c in jobs.c])
        .where(queue.c.rank <= per_owner)
        .order_by(queue.c.rank.asc(), queue.c.created_at.asc(), queue.c.id.asc())
    )
    return [Job.from_row(row) for row in conn.execute(query)]


def count_jobs(*, conn: Connection, states: Iterable[JobState | str]) -> int:
    query = select(func.count()).select_from(jobs).where(jobs.c.state.in_(_states(states)))
    return conn.scalar(query) or 0


def transition(
    *,
    conn: Connection,
    job_id: str,
    from_states: Iterable[JobState | str],
    to_state: JobState | str,
    **fields: Any,
) -> bool:
    """Set ``state=to_state`` (and ``fields``) only if the job is in ``from_states``; commit."""
    values = {"state": JobState(to_state).value, **fields}
    if JobState(to_state) in FINAL_STATES and "finished_at" not in values:
        values["finished_at"] = utcnow()
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.in_(_states(from_states)))
        .values(**values)
    )
    conn.commit()
    return result.rowcount == 1


def unclaim(*, conn: Connection, job_id: str, **fields: Any) -> None:
    """A job whose driver never ran (or was lost) goes back to the queue: RUNNING -> PENDING
    (``started_at`` cleared, ``fields`` set), and a cancel asked meanwhile completes:
    CANCELLING -> CANCELLED. Each step commits."""
    transition(
        conn=conn,
        job_id=job_id,
        from_states=[JobState.RUNNING],
        to_state=JobState.PENDING,
        started_at=None,
        **fields,
    )
    transition(
        conn=conn, job_id=job_id, from_states=[JobState.CANCELLING], to_state=JobState.CANCELLED
    )


def update_job(*, conn: Connection, job_id: str, **fields: Any) -> None:
    """Set ``fields`` on a job regardless of its state; commit."""
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(**fields))
    conn.commit()
