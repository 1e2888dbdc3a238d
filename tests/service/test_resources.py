"""Resource-aware queueing: with CLUSTER_CPUS/CLUSTER_GPUS set, a job waits PENDING until the
running jobs leave room for its scale, in submission order; a job larger than the whole
cluster is refused at submission, naming the field."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from svc_helpers import make_settings, spec, wait_state

from service.api.server import ServerThread
from service.core.resources import Resources, demand, held


def test_demand_is_the_scaling_config() -> None:
    assert demand({}) == Resources(cpus=2, gpus=0)  # ScaleSpec defaults: 2 workers x 1 CPU
    scale = {"workers": 3, "cpus_per_worker": 2, "gpu": True}
    assert demand({"scale": scale}) == Resources(cpus=6, gpus=3)
    with pytest.raises(ValueError, match="workers"):  # the scheduler fails such a job
        demand({"scale": {"workers": 0}})
    assert held([{"scale": {"workers": 0}}, {}]) == Resources(cpus=2)  # counted as none


def test_jobs_wait_for_cpus_in_submission_order(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    server = start_server(make_settings(tmp_path / "runs", MAX_CONCURRENT_JOBS=4, CLUSTER_CPUS=3))
    with httpx.Client(base_url=server.url, timeout=30) as http:

        def submit(name: str, workers: int) -> str:
            # one setting at a time: this queue is about jobs, not trials side by side
            body = spec(name, scale={"workers": workers}, sweep={"max_concurrent": 1})
            response = http.post("/v1/experiments", json=body)
            assert response.status_code == 201, response.text
            return response.json()["id"]

        first = submit("hang-first", 2)
        second = submit("hang-second", 2)
        small = submit("ok-small", 1)  # would fit the 1 free CPU, but comes after `second`
        wait_state(http, first, ("RUNNING",))
        time.sleep(0.5)  # ten scheduler passes
        state = {j: http.get(f"/v1/experiments/{j}").json()["state"] for j in (second, small)}
        assert state == {second: "PENDING", small: "PENDING"}
        reason = http.get(f"/v1/experiments/{second}").json()["pending_reason"]
        assert reason == "waiting for resources: needs 2 CPUs, 0 GPUs; 1 CPUs, unlimited GPUs free"
        behind = http.get(f"/v1/experiments/{small}").json()["pending_reason"]
        assert behind == f"queued behind job {second}, which is {reason}"
        health = http.get("/healthz").json()
        assert health["cpus_in_use"] == 2 and health["cpus_total"] == 3
        assert health["capacity_from"] == "settings"
        assert health["jobs_active"] == 1 and health["jobs_pending"] == 2

        http.post(f"/v1/experiments/{first}/cancel", params={"force": "true"})
        wait_state(http, second, ("RUNNING",))
        assert wait_state(http, small)["state"] == "SUCCEEDED"  # 2 + 1 CPUs fit together
        http.post(f"/v1/experiments/{second}/cancel", params={"force": "true"})
        assert wait_state(http, second)["state"] == "CANCELLED"
        assert http.get("/healthz").json()["cpus_in_use"] == 0


def test_job_larger_than_the_cluster_is_refused(
    tmp_path: Path, start_server: Callable[..., ServerThread]
) -> None:
    server = start_server(make_settings(tmp_path / "runs", CLUSTER_CPUS=4, CLUSTER_GPUS=2))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        gpus = http.post("/v1/experiments", json=spec("ok", scale={"workers": 4, "gpu": True}))
        assert gpus.status_code == 422
        (error,) = gpus.json()["detail"]
        assert error["loc"] == ["body", "scale", "workers"]
        assert "needs 4 GPUs" in error["msg"] and "has 2" in error["msg"]

        cpus = http.post(
            "/v1/experiments", json=spec("ok", scale={"workers": 2, "cpus_per_worker": 3})
        )
        assert cpus.status_code == 422
        (error,) = cpus.json()["detail"]
        assert error["loc"] == ["body", "scale", "cpus_per_worker"]
        assert "needs 6 CPUs" in error["msg"] and "CLUSTER_CPUS" in error["msg"]
        assert http.get("/v1/experiments").json()["total"] == 0  # nothing stored

        fits = http.post("/v1/experiments", json=spec("ok", scale={"workers": 2, "gpu": True}))
        assert fits.status_code == 201
        assert wait_state(http, fits.json()["id"])["state"] == "SUCCEEDED"
