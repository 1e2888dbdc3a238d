"""A job store that refuses to lie: the start-up check, and ``bioprop serve --rebuild-store``.

Every job that ever started has a folder ``RUN_DIR/jobs/<id>`` (its spec, ``job.json`` with
owner, times and driver pid, the driver's log and result). A store that is missing or empty
beside such folders, or a SQLite store failing ``PRAGMA quick_check``, would start a service
that lists nothing and never follows the drivers still running; :func:`check_store` stops the
start instead, with one line naming the file and what to do. :func:`rebuild_store` re-reads
every job folder into the store (a corrupt SQLite file is first moved aside, never deleted)
and leaves running drivers RUNNING, so the scheduler follows them again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.engine import make_url

from service.backends.processes import pid_alive
from service.core import store
from service.core.settings import Settings
from service.core.store import JobState
from trainers.contracts import JobResult

__all__ = ["StoreRefused", "check_store", "job_folders", "rebuild_store", "write_job_record"]

log = logging.getLogger(__name__)

JOB_RECORD = "job.json"


class StoreRefused(RuntimeError):
    """The job store cannot be trusted; the message says which file and what to do."""


def job_folders(settings: Settings) -> list[Path]:
    """Folders of jobs that started (they hold ``spec.json``)."""
    root = settings.RUN_DIR / "jobs"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "spec.json").is_file())


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _todo(what: str) -> str:
    return (
        f"{what}: restore it from a backup (docs/service.md, 'Backup and restore'), or run "
        "`bioprop serve --rebuild-store` once to rebuild it from the job folders"
    )


def check_store(settings: Settings) -> None:
    """Raise :class:`StoreRefused` when the store is missing, empty or corrupt while job
    folders say it held jobs (SQLite: also a failing ``quick_check`` on its own)."""
    folders = job_folders(settings)
    path = _sqlite_path(settings.DB_URL)
    if path is not None:
        wal = path.with_name(path.name + "-wal")
        empty = not path.exists() or (
            path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size)
        )
        if empty:
            if folders:
                state = "missing" if not path.exists() else "empty (0 bytes)"
                raise StoreRefused(
                    _todo(
                        f"job store {path} is {state} but {settings.RUN_DIR / 'jobs'} holds "
                        f"{len(folders)} job folders"
                    )
                )
            return
        try:
            db = sqlite3.connect(path)
            try:
                rows = db.execute("PRAGMA quick_check").fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise StoreRefused(_todo(f"job store {path} cannot be read ({exc})")) from None
        verdict = "; ".join(str(r[0]) for r in rows[:3])
        if verdict != "ok":
            raise StoreRefused(_todo(f"job store {path} fails SQLite's quick_check ({verdict})"))
        if folders and not _has_jobs(settings.DB_URL):
            raise StoreRefused(
                _todo(f"job store {path} holds no jobs but there are {len(folders)} job folders")
            )
        return
    if folders and not _has_jobs(settings.DB_URL):
        where = make_url(settings.DB_URL).render_as_string(hide_password=True)
        raise StoreRefused(
            _todo(f"job store {where} holds no jobs but there are {len(folders)} job folders")
        )


def _has_jobs(url: str) -> bool:
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("jobs"):
            return False
        with engine.connect() as conn:
            return conn.execute(select(store.jobs.c.id).limit(1)).first() is not None
    finally:
        engine.dispose()


def write_job_record(job_dir: Path, job: store.Job, *, pid: int | None) -> None:
    """``job.json`` beside the job's spec: what a rebuilt store needs that the spec lacks."""
    record = {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "created_at": job.created_at.isoformat(),
        "started_at": store.utcnow().isoformat(),
        "pid": pid,
    }
    (job_dir / JOB_RECORD).write_text(json.dumps(record, indent=2))


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def _succeeded(result: Any) -> bool:
    parsed = JobResult.parse(result)
    return bool(parsed and parsed.succeeded())


def _row(folder: Path, *, ray_backend: bool) -> dict[str, Any]:
    """The store row of one job folder."""

    spec = _read(folder / "spec.json") or {}
    record = _read(folder / JOB_RECORD) or {}
    result = _read(folder / "result.json")
    created = record.get("created_at")
    started = record.get("started_at")
    row: dict[str, Any] = {
        "id": folder.name,
        "name": str(record.get("name") or spec.get("name") or folder.name)[:200],
        "spec": spec,
        "owner": record.get("owner"),
        "created_at": datetime.fromisoformat(created) if created else _mtime(folder / "spec.json"),
        "started_at": datetime.fromisoformat(started) if started else None,
        "pid": record.get("pid"),
    }
    if isinstance(result, dict):
        row["result"] = result
        row["mlflow_parent_run_id"] = result.get("parent_run_id")
        row["state"] = (JobState.SUCCEEDED if _succeeded(result) else JobState.FAILED).value
        row["finished_at"] = _mtime(folder / "result.json")
        if row["state"] == JobState.FAILED.value:
            row["error"] = "rebuilt from its job folder: the driver's result.json reports failure"
    elif ray_backend or (row["pid"] and pid_alive(row["pid"], folder.name)):
        row["state"] = JobState.RUNNING.value  # the scheduler follows it again
    else:
        row["state"] = JobState.FAILED.value
        row["finished_at"] = store.utcnow()
        row["error"] = (
            "rebuilt from its job folder: the driver is gone and left no result.json; "
            "its MLflow runs and checkpoints are where they were"
        )
    return row


def rebuild_store(settings: Settings) -> int:
    """Re-read every job folder into the store; returns how many jobs were added. A SQLite
    file that fails its check is moved aside first (``jobs.db.corrupt-<time>``); jobs the
    store already holds are left as they are."""
    path = _sqlite_path(settings.DB_URL)
    if path is not None and path.exists() and path.stat().st_size:
        try:
            check_store(settings)
        except StoreRefused:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                old = path.with_name(path.name + suffix)
                if old.exists():
                    old.rename(old.with_name(f"{old.name}.corrupt-{stamp}"))
            log.warning("moved the unreadable job store aside: %s.corrupt-%s", path, stamp)
    engine = store.make_engine(settings.DB_URL)
    added = 0
    try:
        with engine.connect() as conn:
            known = {row.id for row in conn.execute(select(store.jobs.c.id))}
            for folder in job_folders(settings):
                if folder.name in known:
                    continue
                row = _row(folder, ray_backend=bool(settings.RAY_JOBS_URL))
                conn.execute(store.jobs.insert().values(**row))
                added += 1
            conn.commit()
    finally:
        engine.dispose()
    log.info("job store rebuilt: %d jobs added from %s", added, settings.RUN_DIR / "jobs")
    return added
