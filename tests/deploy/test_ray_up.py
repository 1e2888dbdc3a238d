"""Ray's cluster launcher configs (``deploy/ray-up``: SSH machines, AWS) are valid for the
Ray installed here (its own ``ray/autoscaler/ray-schema.json``) and start the cluster the
KubeRay manifests start: the head's ``ray start`` flags are the RayCluster's head
``rayStartParams``, the workers' object store is the worker group's, every node installs
bioprop and exports the node environment file (whose variables include every one KubeRay
gives the Ray containers: the Ray token, MLflow) before ``ray start``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from deploy_manifests import BASE, DEPLOY, find, kubectl, render

RAY_UP = DEPLOY / "ray-up"
CONFIGS = sorted(RAY_UP.glob("*.yaml"))
ENV_FILE = "~/bioprop-ray.env"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _ray_start(commands: list[str]) -> tuple[str, dict[str, str]]:
    """The shell text before ``ray start`` and the ``--flag=value`` options of it."""
    (line,) = [c for c in commands if "ray start" in c]
    before, after = line.split("ray start", 1)
    flags = {}
    for word in shlex.split(after):
        key, _, value = word.partition("=")
        flags[key.removeprefix("--")] = value
    return before, flags


def test_there_is_an_ssh_and_a_cloud_config() -> None:
    assert {_load(p)["provider"]["type"] for p in CONFIGS} == {"local", "aws"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid_for_the_installed_ray(path: Path) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_load(path), schema)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_node_installs_bioprop_and_exports_the_node_env(path: Path) -> None:
    config = _load(path)
    assert any("pip install" in c and "bioprop" in c for c in config["setup_commands"])
    assert Path(config["file_mounts"][ENV_FILE]) == Path("deploy/ray-up/ray.env")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        before, _ = _ray_start(config[key])
        assert f"set -a && . {ENV_FILE} && set +a" in before, key
        assert "RAY_API_SERVER_ADDRESS=" in before, key  # Train's placement-group cleaner


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: no manifests to compare")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_start_is_the_rayclusters(path: Path) -> None:
    config = _load(path)
    (cluster,) = find(render(BASE), "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    _, flags = _ray_start(config["head_start_ray_commands"])
    assert "head" in flags
    ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert flags["port"] == str(ports["gcs-server"])
    for key, value in head["rayStartParams"].items():
        assert flags.get(key) == str(value), key
    (workers,) = cluster["spec"]["workerGroupSpecs"]
    _, flags = _ray_start(config["worker_start_ray_commands"])
    for key, value in workers["rayStartParams"].items():
        assert flags.get(key) == str(value), key


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: no manifests to compare")
def test_node_env_holds_what_kuberay_gives_the_ray_containers() -> None:
    (cluster,) = find(render(BASE), "RayCluster")
    names = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} if cluster["spec"].get("authOptions") else set()
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    example = (RAY_UP / "ray.env.example").read_text().splitlines()
    defined = {line.split("=", 1)[0] for line in example if line and not line.startswith("#")}
    assert names <= defined, names - defined
    assert {"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"} <= defined  # DDP (docs/cluster.md)
