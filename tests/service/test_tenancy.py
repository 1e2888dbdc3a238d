"""Issue 22 over real HTTP against a real ``bioprop serve``: a service a lab shares.

One module-wide server with two users (``ann``, ``bob``), an admin and a legacy plain
token, ``DATA_DIRS`` set and ``MAX_CONCURRENT_JOBS=0`` (jobs stay PENDING: no driver per
submission); tests that need drivers or settings of their own start their own server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from svc_helpers import ServeProcess, make_settings, running, spec, wait_state

from service.api.server import ServerThread

ANN = {"Authorization": "Bearer ann-secret"}
BOB = {"Authorization": "Bearer bob-secret"}
ADMIN = {"Authorization": "Bearer root-secret"}
LEGACY = {"Authorization": "Bearer plain-legacy"}
ROOT_HASH = hashlib.sha256(b"root-secret").hexdigest()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    base = tmp_path_factory.mktemp("tenancy")
    (base / "data").mkdir()
    proc = ServeProcess(
        base / "runs",
        API_TOKENS=f"ann:ann-secret,bob:user:bob-secret,root:admin:sha256:{ROOT_HASH},plain-legacy",
        DATA_DIRS=str(base / "data"),
        MAX_CONCURRENT_JOBS=0,
    ).start()
    yield from running(proc)


def client(svc: ServeProcess, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers=headers, timeout=30)


def refused(response: httpx.Response) -> list[str]:
    """The ``loc`` paths a 422 names, as dotted strings."""
    assert response.status_code == 422, response.text
    return [".".join(map(str, e["loc"][1:])) for e in response.json()["detail"]]


def test_encoded_storage_escapes_and_endpoint_override_are_refused(lab: ServeProcess) -> None:
    data = lab.run_dir.parent / "data"
    run_dir = lab.run_dir
    with client(lab, ANN) as http:
        victim = http.post("/v1/experiments", json=spec()).json()["id"]
        for storage in (
            f"file://{data}/%2e%2e/x",  # decodes to <data>/../x: outside DATA_DIRS
            f"local://{data}/..%2f..%2fx",
            f"file://{run_dir}/%6aobs/{victim}",  # decodes to another job's folder
            "s3://bucket/x?endpoint_override=attacker.example:9000",
            "s3:///x",  # no bucket
            "s3://../../etc",
            "hdfs://namenode/x",  # a scheme this service does not enable
        ):
            response = http.post("/v1/experiments", json=spec(storage_path=storage))
            assert refused(response) == ["storage_path"], storage
        query = http.post("/v1/experiments", json=spec(storage_path="s3://b1/x?scheme=http"))
        assert "endpoint_override" in query.json()["detail"][0]["msg"]
        # what is admitted is stored in the form that was checked: no escapes left
        ok = http.post("/v1/experiments", json=spec(storage_path=f"file://{data}/ck%70ts/a/../b"))
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["storage_path"] == str(data / "ckpts" / "b")
        s3 = http.post("/v1/experiments", json=spec(storage_path="s3://lab-ckpts/ann/run1"))
        assert s3.json()["spec"]["storage_path"] == "s3://lab-ckpts/ann/run1"


def driver_pid(job_id: str, timeout: float = 20.0) -> int:
    """The pid of the stand-in driver of ``job_id`` (its command line names the job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if job_id.encode() in cmdline and any(b"fake_driver" in c for c in cmdline):
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no driver process for job {job_id}")


def test_a_running_driver_sees_no_api_token_nor_store_credentials(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    svc = ServeProcess(
        run_dir,
        API_TOKENS="ann:ann-secret,root:admin:root-secret",
        DB_URL=f"sqlite:///{run_dir / 'jobs.db'}",
        STORAGE_PATH=str(tmp_path / "ckpts"),
    )
    svc.env.update(PGPASSWORD="store-secret", AWS_SECRET_ACCESS_KEY="meant-for-training")
    svc.start()
    try:
        with client(svc, ANN) as http:
            job = http.post("/v1/experiments", json=spec("hang")).json()
            wait_state(http, job["id"], ("RUNNING",))
            raw = Path(f"/proc/{driver_pid(job['id'])}/environ").read_bytes()
            env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            assert not {k for k in env if k.startswith("BIOPROP_")} - {
                "BIOPROP_USER",
                "BIOPROP_STORAGE_PATH",
            }
            assert "PGPASSWORD" not in env
            assert not any("secret" in v and "training" not in v for v in env.values())
            assert env["BIOPROP_USER"] == "ann"
            assert env["BIOPROP_STORAGE_PATH"] == str(tmp_path / "ckpts")
            assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
            assert env["AWS_SECRET_ACCESS_KEY"] == "meant-for-training"  # for checkpoints
            http.post(f"/v1/experiments/{job['id']}/cancel")
            wait_state(http, job["id"])
    finally:
        svc.stop()


def test_users_see_and_cancel_only_their_own_jobs_and_an_admin_all(lab: ServeProcess) -> None:
    with client(lab, ANN) as ann, client(lab, BOB) as bob, client(lab, ADMIN) as admin:
        mine = ann.post("/v1/experiments", json=spec("ann-job")).json()
        assert mine["owner"] == "ann"
        theirs = bob.post("/v1/experiments", json=spec("bob-job")).json()
        assert theirs["owner"] == "bob"
        for path in ("", "/logs", "/metrics"):
            assert bob.get(f"/v1/experiments/{mine['id']}{path}").status_code == 404
        assert bob.get(f"/v1/experiments/{mine['id']}").json() == {
            "detail": f"no job {mine['id']!r}"  # the same answer as for an unused id
        }
        assert bob.post(f"/v1/experiments/{mine['id']}/cancel").status_code == 404
        assert ann.get(f"/v1/experiments/{mine['id']}").json()["state"] == "PENDING"
        owners = {j["owner"] for j in bob.get("/v1/experiments").json()["items"]}
        assert owners == {"bob"}
        assert bob.get("/v1/experiments", params={"owner": "ann"}).status_code == 403
        # the admin sees everyone's, filters by owner, and may cancel anyone's job
        everyone = {j["owner"] for j in admin.get("/v1/experiments").json()["items"]}
        assert {"ann", "bob"} <= everyone
        only_ann = admin.get("/v1/experiments", params={"owner": "ann"}).json()["items"]
        assert {j["owner"] for j in only_ann} == {"ann"}
        assert admin.get(f"/v1/experiments/{theirs['id']}").json()["owner"] == "bob"
        cancel = admin.post(f"/v1/experiments/{theirs['id']}/cancel")
        assert cancel.json()["state"] == "CANCELLED"
    with client(lab, LEGACY) as legacy:  # a bare token, as before principals: an admin
        job = legacy.post("/v1/experiments", json=spec()).json()
        assert job["owner"].startswith("token-")
        assert legacy.get(f"/v1/experiments/{mine['id']}").status_code == 200
    with client(lab, {"Authorization": "Bearer root-secre"}) as wrong:
        assert wrong.get("/v1/experiments").status_code == 401


def test_idempotency_keys_are_per_principal(lab: ServeProcess) -> None:
    key = {"Idempotency-Key": "same-key"}
    with client(lab, ANN) as ann, client(lab, BOB) as bob:
        first = ann.post("/v1/experiments", json=spec(), headers=key)
        again = ann.post("/v1/experiments", json=spec(), headers=key)
        other = bob.post("/v1/experiments", json=spec(), headers=key)
        assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
        assert again.json()["id"] == first.json()["id"] != other.json()["id"]


def test_tokens_file_rotates_and_revokes_without_restart(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# lab tokens\nann:old-token\n")
    svc = ServeProcess(tmp_path / "runs", TOKENS_FILE=tokens, MAX_CONCURRENT_JOBS=0).start()
    try:
        old = {"Authorization": "Bearer old-token"}
        new = {"Authorization": "Bearer new-token"}
        with client(svc, old) as http:
            job = http.post("/v1/experiments", json=spec()).json()
        tokens.write_text("ann:old-token\nann:new-token\n")  # rotate in the new one
        with client(svc, new) as http:
            assert http.get(f"/v1/experiments/{job['id']}").json()["owner"] == "ann"
        tokens.write_text("ann:new-token\n")  # revoke the old one
        with client(svc, old) as http:
            assert http.get("/v1/experiments").status_code == 401
        with client(svc, new) as http:
            assert http.get("/v1/experiments").json()["total"] == 1
    finally:
        svc.stop()


def test_a_store_from_before_owners_is_migrated_in_place(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    with sqlite3.connect(run_dir / "jobs.db") as db:  # the table as it was, one job in it
        db.execute(
            "CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, "
            "state VARCHAR(16) NOT NULL, spec JSON NOT NULL, created_at DATETIME NOT NULL, "
            "started_at DATETIME, finished_at DATETIME, pid INTEGER, error TEXT, "
            "idempotency_key VARCHAR(255) UNIQUE, body_hash VARCHAR(64), "
            "mlflow_parent_run_id VARCHAR(64), result JSON)"
        )
        db.execute(
            "INSERT INTO jobs (id, name, state, spec, created_at) VALUES "
            "('oldjob', 'ok', 'CANCELLED', ?, '2026-01-01 00:00:00.000000')",
            (json.dumps(spec()),),
        )
    svc = ServeProcess(run_dir, API_TOKENS="ann:ann-secret,root:admin:root-secret").start()
    try:
        with client(svc, ADMIN) as admin, client(svc, ANN) as ann:
            assert admin.get("/v1/experiments/oldjob").json()["owner"] is None
            assert ann.get("/v1/experiments/oldjob").status_code == 404  # an admin's only
            assert ann.post("/v1/experiments", json=spec()).json()["owner"] == "ann"
    finally:
        svc.stop()


def test_a_burst_by_one_principal_delays_anothers_job_by_one_slot_at_most(
    tmp_path: Path,
) -> None:
    svc = ServeProcess(
        tmp_path / "runs", API_TOKENS="ann:ann-secret,bob:bob-secret", MAX_CONCURRENT_JOBS=1
    ).start()
    try:
        with client(svc, ANN) as ann, client(svc, BOB) as bob:
            burst = [ann.post("/v1/experiments", json=spec("sleep-0.2")).json() for _ in range(200)]
            wait_state(ann, burst[0]["id"], ("RUNNING", "SUCCEEDED"))
            single = bob.post("/v1/experiments", json=spec("ok-bob")).json()
            done = wait_state(bob, single["id"], ("SUCCEEDED",), timeout=60)
            page = ann.get("/v1/experiments", params={"limit": 500}).json()["items"]
            # ann's jobs that started after bob submitted and before bob's job started: the
            # slot that was already being handed out, no more
            overtaking = [
                j
                for j in page
                if j["started_at"] and single["created_at"] < j["started_at"] < done["started_at"]
            ]
            assert len(overtaking) <= 1, overtaking
            assert sum(1 for j in page if j["state"] == "PENDING") > 150  # the burst waits
    finally:
        svc.stop()


def test_a_job_over_its_owners_quota_waits_with_the_reason(tmp_path: Path) -> None:
    svc = ServeProcess(
        tmp_path / "runs",
        API_TOKENS="ann:ann-secret,bob:bob-secret",
        QUOTA_JOBS=1,
        QUOTAS='{"bob": {"jobs": 2}}',
    ).start()
    try:
        with client(svc, ANN) as ann, client(svc, BOB) as bob:
            first = ann.post("/v1/experiments", json=spec("hang")).json()
            wait_state(ann, first["id"], ("RUNNING",))
            second = ann.post("/v1/experiments", json=spec("hang")).json()
            bobs = [bob.post("/v1/experiments", json=spec("hang")).json() for _ in range(2)]
            for job in bobs:  # bob's own quota is two
                wait_state(bob, job["id"], ("RUNNING",))
            waiting = ann.get(f"/v1/experiments/{second['id']}").json()
            assert waiting["state"] == "PENDING"
            assert "ann's quota: 1 of 1 running jobs" in waiting["pending_reason"]
            ann.post(f"/v1/experiments/{first['id']}/cancel")
            wait_state(ann, second["id"], ("RUNNING",))  # its turn once the first ends
            for http, job in ((ann, second), (bob, bobs[0]), (bob, bobs[1])):
                http.post(f"/v1/experiments/{job['id']}/cancel")
                wait_state(http, job["id"])
    finally:
        svc.stop()


def test_store_emptied_or_corrupted_stops_the_start_and_rebuild_recovers(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    first = ServeProcess(run_dir, API_TOKENS="ann:ann-secret,root:admin:root-secret").start()
    with client(first, ANN) as http:
        done = http.post("/v1/experiments", json=spec("ok")).json()
        running = http.post("/v1/experiments", json=spec("hang")).json()
        wait_state(http, done["id"], ("SUCCEEDED",))
        wait_state(http, running["id"], ("RUNNING",))
    first.stop()  # the hang driver keeps running, as drivers do across restarts
    db = run_dir / "jobs.db"
    for damage in ("empty", "missing", "garbage"):
        if damage == "empty":
            db.write_bytes(b"")
        elif damage == "missing":
            db.unlink()
        else:
            db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
        with pytest.raises(RuntimeError, match="did not start"):
            ServeProcess(run_dir).start()
        log = (run_dir / "serve.log").read_text()
        (run_dir / "serve.log").unlink()
        (line,) = [line for line in log.splitlines() if "cannot start" in line]
        assert str(db) in line and "--rebuild-store" in line and "backup" in line, line
        assert "Traceback" not in log
    again = ServeProcess(run_dir, API_TOKENS="ann:ann-secret,root:admin:root-secret")
    again.start(60.0, "--rebuild-store")
    try:
        assert list(run_dir.glob("jobs.db.corrupt-*"))  # the damaged file kept aside
        with client(again, ANN) as http:
            jobs = {j["id"]: j for j in http.get("/v1/experiments").json()["items"]}
            assert jobs[done["id"]]["state"] == "SUCCEEDED"
            assert jobs[running["id"]]["state"] == "RUNNING"  # its driver adopted
            assert {j["owner"] for j in jobs.values()} == {"ann"}
            http.post(f"/v1/experiments/{running['id']}/cancel")
            assert wait_state(http, running["id"])["state"] == "CANCELLED"
    finally:
        again.stop()


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """An open (no tokens) local service with short read timeouts."""
    proc = ServeProcess(
        tmp_path_factory.mktemp("bounded") / "runs",
        MAX_CONCURRENT_JOBS=0,
        HEADER_TIMEOUT_S=1,
        BODY_TIMEOUT_S=1,
        MAX_CONNECTIONS_PER_CLIENT=60,
    ).start()
    yield from running(proc)


async def _slow_client(port: int, request: bytes, pause: float) -> bytes:
    """Send ``request`` one byte every ``pause`` seconds; what the server answered before
    it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        for i in range(len(request)):
            try:
                writer.write(request[i : i + 1])
                await writer.drain()
            except ConnectionError:
                break
            try:  # read(n) returns what has come; a timeout loses nothing of it
                answer = await asyncio.wait_for(reader.read(65536), pause)
                break
            except TimeoutError:
                continue
        return answer + await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def test_slow_connections_are_closed_while_the_service_answers(bounded: ServeProcess) -> None:
    port = bounded.port
    headers = b"GET /v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"x" * 200

    async def storm() -> tuple[list[bytes], list[int]]:
        slow = [asyncio.create_task(_slow_client(port, headers, 0.2)) for _ in range(50)]
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=bounded.url, timeout=5) as http:
            health = [(await http.get("/healthz")).status_code for _ in range(5)]
        return await asyncio.wait_for(asyncio.gather(*slow), 30), health

    answers, health = asyncio.run(storm())
    assert health == [200] * 5  # served while 50 connections trickle their headers
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert b"BIOPROP_HEADER_TIMEOUT_S" in answers[0]

    async def endless_body() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/experiments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"nam\r\n'
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # never sends the last chunk
        writer.close()
        return answer

    answer = asyncio.run(endless_body())
    assert answer.startswith(b"HTTP/1.1 408") and b"BIOPROP_BODY_TIMEOUT_S" in answer

    async def crowd() -> list[bytes]:
        return await asyncio.gather(*(_slow_client(port, headers, 5) for _ in range(61)))

    answers = asyncio.run(crowd())
    assert sum(a.startswith(b"HTTP/1.1 429") for a in answers) == 1
    assert httpx.get(f"{bounded.url}/healthz").status_code == 200


def test_header_bound_and_host_allow_list(bounded: ServeProcess) -> None:
    with httpx.Client(base_url=bounded.url, timeout=30) as http:
        big = http.get("/v1/experiments", headers={"X-Pad": "x" * 40_000})
        assert big.status_code == 431  # docs/service.md: 16 KiB
        assert http.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
        rebound = http.get("/v1/experiments", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400 and "ALLOWED_HOSTS" in rebound.text


def test_errors_never_repeat_the_mlflow_password(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    settings = make_settings(
        tmp_path / "runs", MAX_CONCURRENT_JOBS=0, MLFLOW_URI="http://lab:hunter2@127.0.0.1:9"
    )
    with httpx.Client(base_url=start_server(settings).url, timeout=30) as http:
        other = http.post("/v1/experiments", json=spec(tracking={"uri": "http://u:pw@x:1"}))
        assert other.status_code == 422
        assert "hunter2" not in other.text and ":pw@" not in other.text
        assert "lab:***@127.0.0.1:9" in other.text


def test_a_data_root_symlink_re_pointed_after_admission_fails_at_driver_start(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "link").symlink_to(data / "real")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    svc = ServeProcess(tmp_path / "runs", DATA_DIRS=str(data), MAX_CONCURRENT_JOBS=1).start()
    try:
        with client(svc, {}) as http:
            blocker = http.post("/v1/experiments", json=spec("hang")).json()
            wait_state(http, blocker["id"], ("RUNNING",))
            linked = {"kind": "synthetic", "root": str(data / "link")}
            job = http.post("/v1/experiments", json=spec("ok", data=linked)).json()
            assert job["state"] == "PENDING"
            (data / "link").unlink()
            (data / "link").symlink_to(elsewhere)  # re-pointed while the job waits
            http.post(f"/v1/experiments/{blocker['id']}/cancel")
            failed = wait_state(http, job["id"])
            assert failed["state"] == "FAILED"
            assert f"now resolves to {str(elsewhere)!r}" in failed["error"]
            assert f"not to {str(data / 'real')!r} as when the job was admitted" in failed["error"]
            (data / "link").unlink()
            (data / "link").symlink_to(data / "real")  # as admitted: it runs
            again = http.post("/v1/experiments", json=spec("ok", data=linked)).json()
            assert wait_state(http, again["id"])["state"] == "SUCCEEDED"
    finally:
        svc.stop()


def test_a_kept_alive_connection_that_stalls_in_its_next_request_gets_408(
    bounded: ServeProcess,
) -> None:
    async def stall() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", bounded.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b'"capacity_from"'), 10)
        await asyncio.sleep(0.1)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert first.startswith(b"HTTP/1.1 200")
        return rest

    rest = asyncio.run(stall())
    assert b"HTTP/1.1 408" in rest


def test_priority_orders_a_principals_own_queue(tmp_path: Path) -> None:
    svc = ServeProcess(tmp_path / "runs", API_TOKENS="ann:ann-secret", MAX_CONCURRENT_JOBS=1)
    svc.start()
    try:
        with client(svc, ANN) as http:
            blocker = http.post("/v1/experiments", json=spec("hang")).json()
            wait_state(http, blocker["id"], ("RUNNING",))
            low = http.post("/v1/experiments", json=spec("ok-low")).json()
            high = http.post("/v1/experiments", json=spec("ok-high"), params={"priority": 5})
            assert high.json()["priority"] == 5 and low["priority"] == 0
            too_high = http.post("/v1/experiments", json=spec(), params={"priority": 101})
            assert refused(too_high) == ["priority"]
            http.post(f"/v1/experiments/{blocker['id']}/cancel")
            first = wait_state(http, high.json()["id"], ("SUCCEEDED",))
            second = wait_state(http, low["id"], ("SUCCEEDED",))
            assert first["started_at"] < second["started_at"]  # submitted later, ran first
    finally:
        svc.stop()
