"""The driver/service contract: one job-id pattern, one state enum, and a job result whose
success the service decides from typed statuses."""

from __future__ import annotations

import pytest

from trainers.contracts import FINAL_STATES, JOB_ID, JobResult, JobState, RunStatus


def _result(*statuses: str, **extra: object) -> dict:
    children = [{"rule": f"r{i}", "status": s, "metrics": {}} for i, s in enumerate(statuses)]
    return {"status": "FINISHED", "parent_run_id": "p", "children": children, **extra}


def test_a_job_succeeds_only_when_every_setting_finished() -> None:
    assert JobResult.parse(_result("FINISHED", "FINISHED")).succeeded()
    failed = JobResult.parse(_result("FINISHED", "FAILED"))
    assert not failed.succeeded()
    assert [c.rule for c in failed.unfinished()] == ["r1"]
    assert not JobResult.parse(_result("FINISHED", "KILLED")).succeeded()
    assert not JobResult.parse(_result("FINISHED", error="driver died")).succeeded()
    assert not JobResult.parse({**_result("FINISHED"), "status": "FAILED"}).succeeded()


def test_what_is_not_a_result_is_refused_not_guessed() -> None:
    assert JobResult.parse("FINISHED") is None
    assert JobResult.parse(_result("DONE")) is None  # not an MLflow status
    assert JobResult.parse({"children": "all good"}) is None


def test_extra_keys_the_driver_adds_ride_along() -> None:
    parsed = JobResult.parse(_result("FINISHED", best=[{"rule": "r0"}], elapsed_s=3.0))
    assert parsed.model_dump()["elapsed_s"] == 3.0 and parsed.best == [{"rule": "r0"}]
    assert parsed.children[0].status is RunStatus.FINISHED


@pytest.mark.parametrize("job_id", ["a.b", "..", "x/y", "x' OR 1=1", "", "a" * 65])
def test_one_job_id_pattern_refuses_what_could_name_a_folder_or_a_filter(job_id: str) -> None:
    assert not JOB_ID.match(job_id)


def test_the_service_and_the_client_use_the_contract_states() -> None:
    from service import client
    from service.core import store

    assert store.JobState is JobState and store.FINAL_STATES == FINAL_STATES
    assert client.FINAL_STATES == ("SUCCEEDED", "FAILED", "CANCELLED")


def test_the_driver_refuses_a_job_id_the_service_would_refuse(workdir) -> None:
    from trainers.launch import run_experiment
    from trainers.spec import ExperimentSpec

    with pytest.raises(ValueError, match="job_id 'a.b' must match"):
        run_experiment(ExperimentSpec(), job_id="a.b")
