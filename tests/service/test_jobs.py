"""Job lifecycle over HTTP: list and filters, cancel, logs, metrics, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
from svc_helpers import make_settings, spec, wait_log, wait_state, wait_stubborn

from service.api.server import ServerThread


def test_list_paginates_and_filters(http: httpx.Client) -> None:
    ids = [http.post("/v1/experiments", json=spec(f"ok-{i % 2}")).json()["id"] for i in range(5)]
    failed = http.post("/v1/experiments", json=spec("fail")).json()["id"]
    for job_id in [*ids, failed]:
        wait_state(http, job_id)
    page = http.get("/v1/experiments", params={"limit": 2, "offset": 0}).json()
    assert page["total"] == 6 and len(page["items"]) == 2
    assert page["items"][0]["id"] == failed  # newest first
    seen = []
    for offset in range(0, 6, 2):
        seen += [
            j["id"]
            for j in http.get("/v1/experiments", params={"limit": 2, "offset": offset}).json()[
                "items"
            ]
        ]
    assert sorted(seen) == sorted([*ids, failed])
    by_name = http.get("/v1/experiments", params={"name": "ok-1"}).json()
    assert by_name["total"] == 2
    by_state = http.get("/v1/experiments", params={"state": "FAILED"}).json()
    assert [j["id"] for j in by_state["items"]] == [failed]
    both = http.get("/v1/experiments", params=[("state", "FAILED"), ("state", "SUCCEEDED")]).json()
    assert both["total"] == 6
    assert http.get("/v1/experiments", params={"state": "BOGUS"}).status_code == 422
    assert http.get("/v1/experiments", params={"limit": 0}).status_code == 422


def test_cancel_running_job(http: httpx.Client) -> None:
    job = http.post("/v1/experiments", json=spec("hang")).json()
    wait_log(http, job["id"], "hanging until SIGTERM")  # its SIGTERM handler is in place
    answer = http.post(f"/v1/experiments/{job['id']}/cancel")
    assert answer.status_code == 202 and answer.json()["state"] in ("CANCELLING", "CANCELLED")
    done = wait_state(http, job["id"])
    assert done["state"] == "CANCELLED" and done["finished_at"]
    log = http.get(f"/v1/experiments/{job['id']}/logs").text
    assert "got SIGTERM, marking runs KILLED" in log
    assert http.post(f"/v1/experiments/{job['id']}/cancel").json()["state"] == "CANCELLED"
    assert http.post("/v1/experiments/nope/cancel").status_code == 404


def test_cancel_escalates_to_sigkill(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    server = start_server(make_settings(tmp_path / "runs", CANCEL_GRACE_S=0.5))
    with httpx.Client(base_url=server.url) as http:
        job = http.post("/v1/experiments", json=spec("stubborn")).json()
        wait_state(http, job["id"], ("RUNNING",))
        helper = wait_stubborn(tmp_path / "runs", job["id"])
        http.post(f"/v1/experiments/{job['id']}/cancel")
        assert wait_state(http, job["id"], timeout=10)["state"] == "CANCELLED"
        deadline = time.monotonic() + 5
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(helper), "a process of the driver's session survived the kill"


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cancel_pending_job(tmp_path: Path, start_server: Callable[..., ServerThread]) -> None:
    server = start_server(make_settings(tmp_path / "runs", MAX_CONCURRENT_JOBS=1))
    with httpx.Client(base_url=server.url) as http:
        first = http.post("/v1/experiments", json=spec("hang")).json()["id"]
        second = http.post("/v1/experiments", json=spec("ok")).json()["id"]
        wait_state(http, first, ("RUNNING",))
        time.sleep(0.3)
        waiting = http.get(f"/v1/experiments/{second}").json()  # waits its turn
        assert waiting["state"] == "PENDING"
        assert waiting["pending_reason"] == (
            "waiting for a slot: MAX_CONCURRENT_JOBS=1 jobs are running"
        )
        assert http.post(f"/v1/experiments/{second}/cancel").json()["state"] == "CANCELLED"
        http.post(f"/v1/experiments/{first}/cancel", params={"force": "true"})
        assert wait_state(http, first)["state"] == "CANCELLED"
        assert http.get(f"/v1/experiments/{second}").json()["started_at"] is None


def test_logs_tail_and_follow(http: httpx.Client) -> None:
    job = http.post("/v1/experiments", json=spec("sleep-1")).json()
    wait_state(http, job["id"], ("RUNNING",))
    with http.stream("GET", f"/v1/experiments/{job['id']}/logs", params={"follow": "true"}) as r:
        assert r.status_code == 200
        streamed = "".join(r.iter_text())  # returns once the job has ended
    assert "epoch 1/5" in streamed and "epoch 5/5" in streamed
    assert http.get(f"/v1/experiments/{job['id']}").json()["state"] == "SUCCEEDED"
    tail = http.get(f"/v1/experiments/{job['id']}/logs", params={"tail": 2}).text
    assert tail.splitlines() == ["epoch 4/5", "epoch 5/5"]
    assert http.get("/v1/experiments/nope/logs").status_code == 404


def test_metrics_endpoint_shape(http: httpx.Client) -> None:
    job = http.post("/v1/experiments", json=spec("ok")).json()
    wait_state(http, job["id"])
    metrics = http.get(f"/v1/experiments/{job['id']}/metrics").json()
    assert metrics["job_id"] == job["id"] and metrics["state"] == "SUCCEEDED"
    assert metrics["parent_run_id"] == f"parent-{job['id']}"  # from result.json (no MLflow here)
    assert isinstance(metrics["children"], list)
    assert http.get("/v1/experiments/nope/metrics").status_code == 404


def test_idempotent_submission(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k-123"}
    first = http.post("/v1/experiments", json=spec("ok"), headers=headers)
    assert first.status_code == 201
    again = http.post("/v1/experiments", json=spec("ok"), headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = http.post("/v1/experiments", json=spec("ok-other"), headers=headers)
    assert other.status_code == 422
    ((error,),) = [other.json()["detail"]]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert "different request body" in error["msg"]
    assert http.get("/v1/experiments").json()["total"] == 1


def test_concurrent_idempotent_retries_make_one_job(http: httpx.Client) -> None:
    barrier = threading.Barrier(10)

    def post(_: int) -> httpx.Response:
        barrier.wait()
        return http.post("/v1/experiments", json=spec("ok"), headers={"Idempotency-Key": "same"})

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(post, range(10)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.status_code == 201 for r in responses) == 1


def test_fifty_concurrent_submissions(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    server = start_server(make_settings(tmp_path / "runs", MAX_CONCURRENT_JOBS=8))
    barrier = threading.Barrier(50)

    def post(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            return http.post("/v1/experiments", json=spec(f"ok-{i}"))

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, range(50)))
    assert all(r.status_code == 201 for r in responses), [
        r.text for r in responses if r.status_code != 201
    ]
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 50
    with httpx.Client(base_url=server.url, timeout=60) as http:
        listed = http.get("/v1/experiments", params={"limit": 500}).json()
        assert listed["total"] == 50
        assert sorted(j["id"] for j in listed["items"]) == sorted(ids)
        assert sorted(j["name"] for j in listed["items"]) == sorted(f"ok-{i}" for i in range(50))
        for job_id in ids:
            assert wait_state(http, job_id, timeout=120)["state"] == "SUCCEEDED"


def test_sixty_concurrent_status_reads_of_started_jobs(http: httpx.Client, server) -> None:
    """More requests in flight than the store's connection pool holds (5 + 10 overflow):
    a request waiting for MLflow must not hold a store connection, or the event loop
    blocks in the pool's checkout and every request stalls."""
    ids = [http.post("/v1/experiments", json=spec(f"ok-{i}")).json()["id"] for i in range(3)]
    for job_id in ids:
        assert wait_state(http, job_id)["state"] == "SUCCEEDED"

    async def read_all() -> list[int]:
        timeout = aiohttp.ClientTimeout(total=20)
        connector = aiohttp.TCPConnector(limit=60)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as client:

            async def get(k: int) -> int:
                async with client.get(f"{server.url}/v1/experiments/{ids[k % 3]}") as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(get(k) for k in range(60)))

    assert asyncio.run(read_all()) == [200] * 60
