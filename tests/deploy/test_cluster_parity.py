"""The multi-host cluster test (``tests/cluster``) starts what the manifests start: its
control plane gets the environment the control-plane Deployment sets, its Ray head the
parameters the RayCluster gives KubeRay. Names and values are compared with the hosts,
secrets and sizes of each side filled in; the differences that remain are the documented
ones (listed below), so a variable added to, renamed in or dropped from either side fails
here."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

import pytest
from deploy_manifests import BASE, ROOT, control_plane_env, find, kubectl, render

pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl is not installed: the kustomizations cannot be rendered"
)

# Set on one side only, on purpose:
# - the test's cluster has a fixed size, so its control plane queues against the Ray nodes
#   alive now (RAY_CAPACITY); the manifests' worker group is autoscaled, so their control
#   plane queues against the most it grows to (CLUSTER_CPUS/GPUS): a job held back would
#   never make Ray ask the autoscaler for nodes.
ONLY_IN_TEST = {"BIOPROP_RAY_CAPACITY"}
ONLY_IN_MANIFESTS = {"BIOPROP_CLUSTER_CPUS", "BIOPROP_CLUSTER_GPUS"}
# Same variable, values that differ by design: checkpoints in the test's S3 bucket (moto)
# vs the shared volume (deploy/README.md shows the s3:// variant); 2 vs 4 concurrent jobs
# for two 1-CPU test nodes vs GPU pods.
SITE_VALUES = {"BIOPROP_STORAGE_PATH", "BIOPROP_MAX_CONCURRENT_JOBS"}


@pytest.fixture(scope="module")
def topology() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "cluster"))
    try:
        import topology
    finally:
        sys.path.remove(str(ROOT / "tests" / "cluster"))
    return topology


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(BASE)


def test_control_plane_env_is_the_manifests(topology, docs):
    manifest = control_plane_env(docs)
    (cluster,) = find(docs, "RayCluster")
    head_service = f"{cluster['metadata']['name']}-head-svc"
    filled = {
        name: value.format(
            shared="/shared",
            head=head_service,
            ml=urlsplit(manifest["MLFLOW_TRACKING_URI"]).hostname,
            api_token=manifest["BIOPROP_API_TOKENS"],
            jobs_db_url=manifest["BIOPROP_DB_URL"],
            ray_token=manifest["RAY_AUTH_TOKEN"],
        )
        for name, value in topology.CONTROL_PLANE_ENV.items()
    }
    assert set(filled) - set(manifest) == ONLY_IN_TEST
    assert set(manifest) - set(filled) <= ONLY_IN_MANIFESTS
    assert manifest.get("BIOPROP_RAY_CAPACITY", "false").lower() in ("0", "false")
    for name in set(filled) & set(manifest) - SITE_VALUES:
        assert filled[name] == manifest[name], name


def test_ray_head_starts_as_the_raycluster_says(topology, docs):
    """The test's ``ray start --head`` flags are the RayCluster's rayStartParams (KubeRay
    turns each into ``--key=value``) and its GCS port is the head container's."""
    (cluster,) = find(docs, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    args = list(topology.RAY_HEAD_ARGS)
    assert args[0] == "--head"
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert flags.pop("--port") == str(ports["gcs-server"])
    params = head["rayStartParams"]
    for flag, value in flags.items():
        assert params[flag.removeprefix("--")] == value, flag
