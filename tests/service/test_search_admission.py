"""A sweep or search through the control plane: 422 naming the field for a bad distribution,
an empty search space or too many samples; a sweep holds the resources of the trials it runs
side by side."""

from __future__ import annotations

from pathlib import Path

import httpx
from svc_helpers import make_settings, spec

from service.api.server import ServerThread
from service.core.resources import Resources, demand


def _errors(response: httpx.Response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.text
    return [(e["loc"], e["msg"]) for e in response.json()["detail"]]


def _search(**fields) -> dict:
    return spec(search={"space": {"optim.lr": {"loguniform": [1e-4, 1e-1]}}, **fields})


def test_bad_distribution_names_the_searched_field(http: httpx.Client) -> None:
    body = _search()
    body["search"]["space"]["optim.lr"] = {"loguniform": [0, 1e-1]}
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=body))
    assert loc == ["body", "search", "space", "optim.lr"]
    assert "loguniform: low must be > 0" in msg
    body["search"]["space"]["optim.lr"] = {"normal": [0, 1]}
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=body))
    assert loc == ["body", "search", "space", "optim.lr", "normal"]
    body["search"]["space"] = {"optim.lr": {"uniform": [-0.1, 0.1]}}  # lr must be > 0
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=body))
    assert "search.space.optim.lr: value -0.1 is invalid for optim.lr" in msg
    body["search"]["space"] = {"optim.momentum": {"uniform": [0.1, 0.9]}}
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=body))
    assert "search.space.optim.momentum: not a searchable field" in msg


def test_empty_space_is_422(http: httpx.Client) -> None:
    ((loc, msg),) = _errors(http.post("/v1/experiments", json=spec(search={"space": {}})))
    assert loc == ["body", "search"] and "search.space must name at least one field" in msg


def test_num_samples_over_the_service_maximum_is_422(tmp_path: Path, start_server) -> None:
    server: ServerThread = start_server(make_settings(tmp_path / "runs", MAX_SEARCH_SAMPLES=8))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ((loc, msg),) = _errors(http.post("/v1/experiments", json=_search(num_samples=9)))
        assert loc == ["body", "search", "num_samples"] and "(8, BIOPROP_MAX_SEARCH_SAMPLES)" in msg
        assert http.post("/v1/experiments", json=_search(num_samples=8)).status_code == 201


def test_a_sweep_holds_the_trials_it_runs_at_once() -> None:
    one = {"scale": {"workers": 2, "cpus_per_worker": 2}}  # 4 CPUs a setting
    grid = {**one, "rule": {"name": ["bp", "fa", "ss"]}}
    assert demand(one) == Resources(cpus=4)
    assert demand(grid) == Resources(cpus=12)  # all three side by side
    assert demand({**grid, "sweep": {"max_concurrent": 2}}) == Resources(cpus=8)
    assert demand(grid, Resources(cpus=10, gpus=0)) == Resources(cpus=8)  # two fit in 10
    search = {**grid, "search": {"num_samples": 4, "space": {"optim.lr": {"choice": [0.1]}}}}
    assert demand(search, Resources(cpus=100, gpus=0)) == Resources(cpus=48)  # 3 x 4 trials
