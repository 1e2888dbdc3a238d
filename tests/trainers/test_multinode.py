"""Multi-node: a two-node Ray cluster on this machine (two raylets, one CPU each); the DDP
worker group spans both nodes and checkpoints land in the shared storage path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from mlflow import MlflowClient
from tiny_specs import tiny_spec

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from ray.cluster_utils import Cluster
    from trainers.launch import run_experiment
    from trainers.spec import ExperimentSpec

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        spec = ExperimentSpec.model_validate(json.loads(sys.argv[1]))
        print("RESULT " + json.dumps(run_experiment(spec, job_id="two-nodes")), flush=True)
    finally:
        import ray
        ray.shutdown()
        cluster.shutdown()
    """
)


def test_ddp_spans_two_raylets_and_checkpoints_land_in_shared_storage(workdir):
    shared = workdir / "shared"
    spec = tiny_spec(
        name="multinode",
        rule={"name": "ss"},
        schedule={"epochs": 2},
        scale={"workers": 2, "cpus_per_worker": 1},
        storage_path=str(shared),
    )
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["status"] == "FINISHED"

    (child,) = result["children"]
    run = MlflowClient(result["tracking_uri"]).get_run(child["run_id"])
    assert run.data.metrics["ddp_nodes"] == 2
    assert child["checkpoint"].startswith(str(shared))
    checkpoints = sorted(shared.glob("multinode-ss-two-nodes/checkpoint_*/checkpoint.pt"))
    assert len(checkpoints) == 2
