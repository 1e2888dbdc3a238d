"""Restart recovery: stop the service with jobs in every state, change the world while it is
down, start it again on the same store and check each job's fate."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from svc_helpers import make_settings, spec, wait_state, wait_stubborn

from service.api.server import ServerThread
from service.core import store


def store_pid(settings, job_id: str) -> int | None:
    with store.make_engine(settings.DB_URL).connect() as conn:
        return store.get_job(conn=conn, job_id=job_id).pid


@pytest.mark.slow
def test_restart_reconciles_every_state(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    # a long grace period before the restart, a short one after it
    first = start_server(make_settings(tmp_path / "runs", MAX_CONCURRENT_JOBS=4, CANCEL_GRACE_S=60))
    settings = make_settings(tmp_path / "runs", MAX_CONCURRENT_JOBS=4, CANCEL_GRACE_S=1.0)
    ids: dict[str, str] = {}
    with httpx.Client(base_url=first.url, timeout=30) as http:

        def submit(key: str, name: str) -> None:
            ids[key] = http.post("/v1/experiments", json=spec(name)).json()["id"]

        submit("succeeded", "ok")
        submit("failed", "fail")
        submit("cancelled", "hang")
        wait_state(http, ids["cancelled"], ("RUNNING",))
        time.sleep(0.3)
        http.post(f"/v1/experiments/{ids['cancelled']}/cancel")
        for key in ("succeeded", "failed", "cancelled"):
            wait_state(http, ids[key])

        submit("still_running", "sleep-8")
        submit("done_while_down", "sleep-1")
        submit("lost", "hang")
        submit("cancelling", "stubborn")
        submit("pending", "ok")
        for key in ("still_running", "done_while_down", "lost", "cancelling"):
            wait_state(http, ids[key], ("RUNNING",))
        assert http.get(f"/v1/experiments/{ids['pending']}").json()["state"] == "PENDING"
        wait_stubborn(tmp_path / "runs", ids["cancelling"])
        http.post(f"/v1/experiments/{ids['cancelling']}/cancel")
        lost_pid = http.get(f"/v1/experiments/{ids['lost']}")
    first.stop()

    with store.make_engine(settings.DB_URL).connect() as conn:
        states = {k: store.get_job(conn=conn, job_id=v).state for k, v in ids.items()}
        lost = store.get_job(conn=conn, job_id=ids["lost"])
        running_pid = store.get_job(conn=conn, job_id=ids["still_running"]).pid
        # a job claimed by a scheduler that died before spawning its driver
        orphan, _ = store.create_job(conn=conn, name="ok-orphan", spec=spec("ok-orphan"))
        store.transition(conn=conn, job_id=orphan.id, from_states=["PENDING"], to_state="RUNNING")
    assert lost_pid.status_code == 200
    assert states["cancelling"] == "CANCELLING" and states["still_running"] == "RUNNING"
    os.killpg(lost.pid, signal.SIGKILL)  # the driver dies while nobody watches
    time.sleep(1.5)  # done_while_down finishes and writes result.json

    second = start_server(settings)
    with httpx.Client(base_url=second.url, timeout=30) as http:

        def final(key: str) -> dict:
            return wait_state(http, ids[key], timeout=30)

        assert final("succeeded")["state"] == "SUCCEEDED"
        assert final("failed")["state"] == "FAILED"
        assert final("cancelled")["state"] == "CANCELLED"
        assert final("done_while_down")["state"] == "SUCCEEDED"
        assert (
            final("done_while_down")["mlflow_parent_run_id"] == f"parent-{ids['done_while_down']}"
        )
        # a driver that died unwatched is re-launched (it resumes from its checkpoints)
        relaunched = wait_state(http, ids["lost"], ("RUNNING",), timeout=30)
        assert relaunched["error"].startswith("driver lost") and "re-queued" in relaunched["error"]
        relaunched_pid = store_pid(settings, ids["lost"])
        assert relaunched_pid not in (None, lost.pid)
        http.post(f"/v1/experiments/{ids['lost']}/cancel")
        assert final("lost")["state"] == "CANCELLED"
        # the driver that outlived the restart is followed, not started again (it may have
        # finished by now on a slow machine: its 8 s run from before the restart)
        assert store_pid(settings, ids["still_running"]) == running_pid
        assert final("cancelling")["state"] == "CANCELLED"  # SIGTERM ignored -> SIGKILL
        assert final("pending")["state"] == "SUCCEEDED"
        assert wait_state(http, orphan.id)["state"] == "SUCCEEDED"
        assert final("still_running")["state"] == "SUCCEEDED"  # followed again to the end
        assert http.get("/v1/experiments").json()["total"] == len(ids) + 1
