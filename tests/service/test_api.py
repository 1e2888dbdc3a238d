"""The REST API over real HTTP (uvicorn on 127.0.0.1), driver = the fake trainers driver."""

from __future__ import annotations

import httpx
from svc_helpers import spec, wait_state


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    # no BIOPROP_CLUSTER_CPUS/GPUS, no Ray: the queue is not bounded by resources
    assert health["cpus_total"] is None and health["capacity_from"] == "unlimited"


def test_submit_runs_to_succeeded(http: httpx.Client) -> None:
    response = http.post("/v1/experiments", json=spec("ok"))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] in ("PENDING", "RUNNING")
    assert job["spec"]["rule"]["name"] == ["bp", "fa"]
    assert response.headers["Location"] == f"/v1/experiments/{job['id']}"
    done = wait_state(http, job["id"])
    assert done["state"] == "SUCCEEDED", done
    assert done["started_at"] and done["finished_at"]
    assert done["mlflow_parent_run_id"] == f"parent-{job['id']}"
    assert [c["rule"] for c in done["result"]["children"]] == ["bp", "fa"]


def test_failed_job_carries_log_tail(http: httpx.Client) -> None:
    job = http.post("/v1/experiments", json=spec("fail")).json()
    done = wait_state(http, job["id"])
    assert done["state"] == "FAILED"
    assert "exited with code 3" in done["error"]
    assert "boom in the training loop" in done["error"]


def test_failed_setting_is_named_in_error(http: httpx.Client) -> None:
    job = http.post("/v1/experiments", json=spec("partial")).json()
    done = wait_state(http, job["id"])
    assert done["state"] == "FAILED"
    assert "exited with code 1; failed settings: fa: ValueError: nan loss" in done["error"]
    assert done["mlflow_parent_run_id"] == f"parent-{job['id']}"


def test_get_unknown_is_404(http: httpx.Client) -> None:
    assert http.get("/v1/experiments/nope").status_code == 404


def _errors(response: httpx.Response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.text
    return [(e["loc"], e["msg"]) for e in response.json()["detail"]]


def test_unknown_rule_is_422_listing_valid_rules(http: httpx.Client) -> None:
    errors = _errors(http.post("/v1/experiments", json=spec(rule={"name": ["bp", "nope"]})))
    ((loc, msg),) = errors
    assert loc == ["body", "rule", "name"]
    assert "'nope'" in msg and "valid rules: bp, fa" in msg


def test_mistyped_rule_param_is_422_naming_it_and_the_valid_ones(http: httpx.Client) -> None:
    stored = http.get("/v1/experiments").json()["total"]
    body = spec(rule={"name": "kp", "params": {"dceay": 0.1}})
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=body))
    assert loc == ["body", "rule"]
    assert "rule.params.dceay" in msg and "its parameters: decay" in msg
    assert http.get("/v1/experiments").json()["total"] == stored  # nothing was stored


def test_unknown_model_is_422_listing_valid_models(http: httpx.Client) -> None:
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=spec(model="vgg")))
    assert loc == ["body", "model"]
    assert "valid models:" in msg and "resnet18" in msg


def test_bad_field_type_names_the_path(http: httpx.Client) -> None:
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=spec(optim={"lr": -1})))
    assert loc == ["body", "optim", "lr"]
    assert "greater than 0" in msg


def test_unknown_field_is_422(http: httpx.Client) -> None:
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=spec(schedule={"epochz": 3})))
    assert loc == ["body", "schedule", "epochz"]


def test_cross_field_rule_is_422(http: httpx.Client) -> None:
    ((loc, msg),) = _errors(
        http.post("/v1/experiments", json=spec(batch_size=1, scale={"workers": 2}))
    )
    assert loc == ["body"]
    assert "smaller than scale.workers" in msg


def test_foreign_tracking_uri_is_422(http: httpx.Client) -> None:
    ((loc, msg),) = _errors(
        http.post("/v1/experiments", json=spec(tracking={"uri": "http://elsewhere:5000"}))
    )
    assert loc == ["body", "tracking", "uri"] and "leave tracking.uri unset" in msg


def test_non_json_body_is_400(http: httpx.Client) -> None:
    """As docs/service.md says: a body that is not JSON text is a 400 (a spec that is
    JSON but invalid a 422), and a JSON object with a key twice is not JSON a spec can be."""
    for body in (b"{not json", b'{"name": "ok", "name": "other"}'):
        response = http.post(
            "/v1/experiments", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, body
    assert "duplicate key 'name'" in response.json()["detail"]


def test_openapi_has_examples(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    post = schema["paths"]["/v1/experiments"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert examples["sweep"]["value"]["rule"]["name"] == ["bp", "fa", "ss"]
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]


def test_method_not_allowed_names_every_method_of_the_path(http: httpx.Client) -> None:
    """RFC 9110: a 405's Allow lists the methods the resource supports, all of them."""
    for path, methods in [
        ("/v1/experiments", {"GET", "HEAD", "POST"}),
        ("/v1/experiments/0123456789abcdef/cancel", {"POST"}),
    ]:
        response = http.request("DELETE", path)
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) == methods
