"""The job store and the service on PostgreSQL (127.0.0.1:5432, database ``test``), each run in
its own schema; skipped with the reason when no server answers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import ServeProcess, make_settings, spec, wait_state

from service.api.server import ServerThread
from service.core import store

pytestmark = pytest.mark.postgres

BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"bioprop_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (database test) unreachable: {exc}")
    with conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{BASE}?options=-csearch_path%3D{schema}"
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_store_functions_on_postgres(pg_url: str) -> None:
    engine = store.make_engine(pg_url)
    with engine.connect() as conn:
        job, created = store.create_job(
            conn=conn, name="pg", spec={"a": 1}, idempotency_key="k", body_hash="h"
        )
        assert created
        again, created = store.create_job(
            conn=conn, name="pg", spec={"a": 1}, idempotency_key="k", body_hash="h"
        )
        assert not created and again.id == job.id
        assert store.transition(
            conn=conn, job_id=job.id, from_states=["PENDING"], to_state="RUNNING"
        )
        assert not store.transition(
            conn=conn, job_id=job.id, from_states=["PENDING"], to_state="RUNNING"
        )
        store.transition(conn=conn, job_id=job.id, from_states=["RUNNING"], to_state="SUCCEEDED")
        fetched = store.get_job(conn=conn, job_id=job.id)
        assert fetched.state == "SUCCEEDED" and fetched.finished_at is not None
        assert fetched.spec == {"a": 1}
        page, total = store.list_jobs(conn=conn, states=["SUCCEEDED"])
        assert total == 1 and page[0].id == job.id
        # a group commit: a stored key, a new key twice, and a plain submission
        batch = store.create_jobs(
            conn=conn,
            new=[
                store.NewJob("pg", {"a": 1}, "k", "h"),
                store.NewJob("b", {}, "k2", "h2"),
                store.NewJob("b", {}, "k2", "h2"),
                store.NewJob("c", {}),
            ],
        )
        assert [created for _, created in batch] == [False, True, False, True]
        assert batch[0][0].id == job.id and batch[2][0].id == batch[1][0].id
        pending, total = store.list_jobs(conn=conn, states=["PENDING"], oldest_first=True)
        assert total == 2 and [j.name for j in pending] == ["b", "c"]
    engine.dispose()


def test_service_on_postgres(
    pg_url: str, tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    server = start_server(make_settings(tmp_path / "runs", DB_URL=pg_url))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job = http.post("/v1/experiments", json=spec("ok"), headers={"Idempotency-Key": "pg"})
        assert job.status_code == 201
        replay = http.post("/v1/experiments", json=spec("ok"), headers={"Idempotency-Key": "pg"})
        assert replay.status_code == 200 and replay.json()["id"] == job.json()["id"]
        assert wait_state(http, job.json()["id"])["state"] == "SUCCEEDED"
        assert http.get("/v1/experiments").json()["total"] == 1


def test_a_locked_store_answers_503_instead_of_hanging(
    pg_url: str, tmp_path: Path, start_serve: Callable[..., ServeProcess]
) -> None:
    """The job table locked by someone else: requests that get no store connection within
    STORE_TIMEOUT_S answer 503 (with Retry-After) instead of queueing forever, and the
    service answers normally once the lock is gone."""
    import psycopg

    svc = start_serve(
        tmp_path / "runs",
        DB_URL=pg_url,
        STORE_POOL_SIZE=4,
        STORE_TIMEOUT_S=1,
        MAX_CONCURRENT_JOBS=0,
    )
    job_id = httpx.post(f"{svc.url}/v1/experiments", json=spec("pg-lock"), timeout=30).json()["id"]
    # PostgreSQL refuses NUL in text: such ids and names never reach it
    assert httpx.get(f"{svc.url}/v1/experiments/a%00b", timeout=30).status_code == 404
    named = httpx.get(f"{svc.url}/v1/experiments", params={"name": "a\x00"}, timeout=30)
    assert named.status_code == 422
    schema = pg_url.rsplit("%3D", 1)[1]
    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres") as locker:
        locker.execute(f'LOCK TABLE "{schema}".jobs IN ACCESS EXCLUSIVE MODE')

        async def burst() -> list[tuple[int, float, str | None]]:
            async with httpx.AsyncClient(base_url=svc.url, timeout=60) as client:

                async def get() -> tuple[int, float, str | None]:
                    began = time.monotonic()
                    answer = await client.get(f"/v1/experiments/{job_id}")
                    took = time.monotonic() - began
                    return answer.status_code, took, answer.headers.get("Retry-After")

                tasks = [asyncio.create_task(get()) for _ in range(10)]
                done, _ = await asyncio.wait(tasks, timeout=8)
                busy = [t.result() for t in done]
                locker.rollback()  # the lock goes: the two requests that held a slot finish
                rest = await asyncio.gather(*(t for t in tasks if t not in done))
                return busy + list(rest)

        answers = asyncio.run(burst())
    refused = [a for a in answers if a[0] == 503]
    assert len(refused) == 8 and all(took < 6 and after == "1" for _, took, after in refused)
    assert sorted(code for code, _, _ in answers if code != 503) == [200, 200]
    assert httpx.get(f"{svc.url}/v1/experiments/{job_id}", timeout=10).status_code == 200


def test_an_older_postgres_store_is_migrated_and_an_emptied_one_refused(
    pg_url: str, tmp_path: Path
) -> None:
    """A store from before owners gains its columns in place; a store emptied beside job
    folders stops the start, naming the database (password masked); --rebuild-store
    restores the jobs from their folders."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as conn:  # the table as the first versions made it, one job in it
        conn.exec_driver_sql(
            "CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, "
            "state VARCHAR(16) NOT NULL, spec JSON NOT NULL, created_at TIMESTAMPTZ NOT NULL, "
            "started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, pid INTEGER, error TEXT, "
            "idempotency_key VARCHAR(255) UNIQUE, body_hash VARCHAR(64), "
            "mlflow_parent_run_id VARCHAR(64), result JSON)"
        )
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, name, state, spec, created_at) VALUES "
            "('oldjob', 'ok', 'CANCELLED', '{}', now())"
        )
    run_dir = tmp_path / "runs"
    folder = run_dir / "jobs" / "donejob"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text('{"name": "ok", "rule": {"name": "bp"}}')
    (folder / "result.json").write_text('{"parent_run_id": "p", "children": []}')
    tokens = "ann:ann-secret,root:admin:root-secret"
    admin = {"Authorization": "Bearer root-secret"}
    svc = ServeProcess(run_dir, DB_URL=pg_url, API_TOKENS=tokens, MAX_CONCURRENT_JOBS=0).start()
    with httpx.Client(base_url=svc.url, headers=admin) as http:
        assert http.get("/v1/experiments/oldjob").json()["owner"] is None
        ann = {"Authorization": "Bearer ann-secret"}
        assert http.post("/v1/experiments", json=spec(), headers=ann).json()["owner"] == "ann"
    svc.stop()
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM jobs")
    with pytest.raises(RuntimeError, match="did not start"):
        ServeProcess(run_dir, DB_URL=pg_url, API_TOKENS=tokens).start()
    assert "holds no jobs but there are 1 job folders" in (run_dir / "serve.log").read_text()
    again = ServeProcess(run_dir, DB_URL=pg_url, API_TOKENS=tokens, MAX_CONCURRENT_JOBS=0)
    again.start(60.0, "--rebuild-store")
    try:
        with httpx.Client(base_url=again.url, headers=admin) as http:
            assert http.get("/v1/experiments/donejob").json()["state"] == "SUCCEEDED"
    finally:
        again.stop()
        engine.dispose()
