"""The cluster runtime on real separate hosts (network namespaces, ``topology.py``): a Ray
head that trains nothing, two Ray worker nodes, an MLflow server on PostgreSQL with proxied
artifacts in S3, an S3 endpoint for checkpoints, and the control plane outside the Ray head,
configured only through environment variables. A user submits over HTTP with a token.

What a user checks: the sweep SUCCEEDED as one Ray job whose submission id is the job id,
its DDP group spanned both worker nodes, the checkpoints are in the bucket, the MLflow
server holds the parent run, both children, their metrics and checkpoints, and ``/logs``
gives the driver's output; a control-plane restart mid-run neither loses nor restarts the
job; a cancel stops the Ray job, marks the MLflow runs KILLED and frees the job's share of
the cluster; losing a worker node mid-run (SIGKILL to its raylet and workers) restarts the
worker group on the nodes left, from the last checkpoint in the bucket, and the job SUCCEEDS
with one MLflow point per epoch; a setting whose DDP set-up fails while its worker group
starts is FAILED and frees its CPUs for the next. The control plane runs from an interpreter
path no Ray host has (the driver is the head's ``python``).

Skipped, with the reason, where network namespaces cannot be created (not root, no
iproute2), PostgreSQL's socket is missing, or moto is not installed. Tests share one
topology (module fixture) and run in file order.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cluster_helpers import BIN, ray_job
from topology import API_TOKEN, PG_SOCKET_DIR, Topology, can_make_netns, s3_keys, s3_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SWEEP = {
    "name": "cluster-sweep",
    "model": "mlp",
    "data": {"kind": "digits", "image_size": 8},
    "rule": {"name": ["bp", "fa"]},
    "schedule": {"epochs": 1},
    "batch_size": 64,
    "scale": {"workers": 2, "cpus_per_worker": 1},
    "max_failures": 1,
}


def _why_not() -> str | None:
    reason = can_make_netns()
    if reason:
        return f"cannot create network namespaces: {reason}"
    if shutil.which("psql") is None or not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
        return f"no PostgreSQL server with its socket in {PG_SOCKET_DIR} (and psql)"
    try:
        import moto.server  # noqa: F401
    except ImportError:
        return "moto[server] (dev extra) is not installed"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    topo = Topology(tmp_path_factory.mktemp("cluster"))
    try:
        topo.build_network()
        mlflow_db, jobs_db = topo.create_databases()
        topo.start_s3()
        topo.start_ray_head()
        topo.wait_ray_head()
        # each worker host's node-local disk for data.cache: a folder of its own
        topo.start_ray_worker("w1", nodes=2, BIOPROP_SHARD_CACHE=str(topo.root / "cache-w1"))
        topo.start_ray_worker("w2", nodes=3, BIOPROP_SHARD_CACHE=str(topo.root / "cache-w2"))
        topo.start_mlflow(mlflow_db)
        topo.wait_mlflow()
        topo.cp_env = topo.control_plane_env(jobs_db)
        topo.start_control_plane(topo.cp_env)
        yield topo
    finally:
        topo.close()


def _http(topo: Topology) -> httpx.Client:
    return httpx.Client(
        base_url=topo.api, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    )


def _wait(topo: Topology, job_id: str, states=FINAL, timeout: float = 300) -> dict:
    def poll() -> dict:
        deadline = time.monotonic() + timeout
        with _http(topo) as http:
            while True:
                job = http.get(f"/v1/experiments/{job_id}", params={"progress": "false"}).json()
                if job["state"] in states:
                    return job
                if time.monotonic() > deadline:
                    logs = http.get(f"/v1/experiments/{job_id}/logs", params={"tail": 60}).text
                    raise AssertionError(
                        f"job {job_id} stuck in {job['state']}:\n{logs}\n{_diagnosis(topo)}"
                    )
                time.sleep(1)

    return topo.user(poll)


def _submit(topo: Topology, spec: dict) -> str:
    def post() -> dict:
        with _http(topo) as http:
            response = http.post("/v1/experiments", json=spec)
            assert response.status_code == 201, response.text
            return response.json()

    return topo.user(post)["id"]


def _runs(topo: Topology, job_id: str):
    from trainers.tracking import find_job_runs

    return topo.user(find_job_runs, job_id, topo.mlflow)


def _logs(topo: Topology, job_id: str, **params) -> str:
    def get() -> str:
        with _http(topo) as http:
            return http.get(f"/v1/experiments/{job_id}/logs", params=params).text

    return topo.user(get)


def _wait_runs(topo: Topology, job_id: str, children: int, timeout: float = 300):
    """Wait until MLflow holds the job's parent run and ``children`` RUNNING child runs."""

    def ready():
        parent, kids = _runs(topo, job_id)
        running = [k for k in kids if k.info.status == "RUNNING"]
        if parent is not None and len(running) >= children:
            return parent, kids
        with _http(topo) as http:  # an ended job will never get there: fail at once
            job = http.get(f"/v1/experiments/{job_id}", params={"progress": "false"}).json()
        return ("ended", job) if job["state"] in FINAL else None

    from cluster_helpers import wait_until

    found = wait_until(lambda: topo.user(ready), f"MLflow runs of job {job_id}", timeout)
    assert found[0] != "ended", f"job ended before its runs were seen: {found[1]}"
    return found


def _diagnosis(topo: Topology) -> str:
    """Where Ray placed what, for a failure message: live placement groups and actors by
    host, and where the processes' and Ray's logs are kept."""
    try:
        host_of = {ip: host for host, ip in topo.ip.items()}
        nodes = {n["node_id"]: host_of.get(n["node_ip"], n["node_ip"])
                 for n in topo.user(topo.ray_state, "nodes")}  # fmt: skip
        groups = [
            f"{g['placement_group_id'][:8]} {g['state']} {g.get('bundles')}"
            for g in topo.user(topo.ray_state, "placement_groups")
            if g["state"] != "REMOVED"
        ]
        actors = [
            f"{a['class_name']}@{nodes.get(a['node_id'], '?')} {a['state']}"
            for a in topo.user(topo.ray_state, "actors")
            if a["state"] != "DEAD"
        ]
        state = f"placement groups: {groups}\nactors: {actors}"
    except Exception as exc:  # the dashboard itself may be what broke
        state = f"Ray state unavailable: {exc!r}"
    return f"{state}\nlogs (Ray's copied at teardown): {topo.logs}"


def _live_placement_groups(topo: Topology) -> list[dict]:
    return [g for g in topo.user(topo.ray_state, "placement_groups") if g["state"] != "REMOVED"]


def _restart_control_plane(topo: Topology) -> None:
    """Stop the control plane (SIGTERM, as a rollout does) and start a new one."""
    old = topo.procs.pop("control-plane")
    old.stop()
    topo.restarts = getattr(topo, "restarts", 0) + 1
    proc = topo.start_control_plane(topo.cp_env, name=f"control-plane-{topo.restarts}")
    topo.procs["control-plane"] = topo.procs.pop(proc.name)


def _tiny_set_in_the_bucket(topo: Topology) -> str:
    """A tiny ImageNet-layout JPEG set (3 classes), packed here into webdataset shards (16
    images each: 3 train, 2 val) and put under ``s3://data/tiny/`` on the topology's S3
    host; returns that URI."""
    from data_pipelines.pack import pack_imagefolder
    from data_pipelines.synth import synth_imagenet

    local = topo.root / "tiny-set"
    synth_imagenet(local, classes=3, train_per_class=16, val_per_class=8, size=28)
    packed = pack_imagefolder(local, topo.root / "tiny-wds", shard_size=16)
    files = sorted(p for p in Path(packed).rglob("*") if p.is_file())

    def upload() -> None:
        import boto3
        from topology import AWS, _aws_kwargs

        client = boto3.client("s3", endpoint_url=AWS["AWS_ENDPOINT_URL"], **_aws_kwargs())
        client.create_bucket(Bucket="data")
        for path in files:
            client.upload_file(str(path), "data", f"tiny/{path.relative_to(packed).as_posix()}")

    topo.user(upload)
    return "s3://data/tiny"


def test_sweep_runs_as_a_ray_job_across_two_worker_nodes(cluster: Topology) -> None:
    # its data in the object store: each worker host copies the shards from the bucket once
    # into its own node cache (data.cache) and its DALI reader reads its share there
    root = _tiny_set_in_the_bucket(cluster)
    data = {"kind": "imagefolder", "root": root, "image_size": 24, "cache": True}
    job_id = _submit(cluster, {**SWEEP, "data": data, "batch_size": 16, "model": "convnet"})

    def read_from_ray() -> dict | None:
        with _http(cluster) as http:
            health = http.get("/healthz").json()
        return health if health["capacity_from"] == "ray" else None

    # the queue's capacity is read from Ray (BIOPROP_RAY_CAPACITY) once a job is queued:
    # two one-CPU workers and a head with none
    from cluster_helpers import wait_until

    health = wait_until(lambda: cluster.user(read_from_ray), "capacity read from Ray", 60)
    assert health["cpus_total"] == 2 and health["gpus_total"] == 0, health
    # the control plane restarts while the driver trains the first setting
    _wait_runs(cluster, job_id, children=1)
    _restart_control_plane(cluster)
    job = _wait(cluster, job_id)
    assert job["state"] == "SUCCEEDED", job.get("error")

    ray = cluster.user(ray_job, cluster.dashboard, job_id)
    assert ray["submission_id"] == job_id and ray["status"] == "SUCCEEDED"
    # the control plane's interpreter (cp-venv) exists on no host: the driver is the head's
    assert ray["entrypoint"].startswith("python -m trainers.launch "), ray["entrypoint"]
    assert not cluster.control_plane_python().exists()

    parent, children = _runs(cluster, job_id)
    assert parent is not None and parent.info.status == "FINISHED"
    assert sorted(c.data.tags.get("bioprop.rule") for c in children) == ["bp", "fa"]
    from mlflow import MlflowClient

    client = MlflowClient(cluster.mlflow)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.metrics["ddp_nodes"] == 2
        assert "val_acc" in child.data.metrics and "train_loss" in child.data.metrics
        artifacts = cluster.user(client.list_artifacts, child.info.run_id, "checkpoints")
        assert [a.path for a in artifacts] == ["checkpoints/checkpoint.pt"]
    # artifacts went through the MLflow server into its S3 destination
    stored = cluster.user(s3_keys, "mlflow", "artifacts/")
    assert sum(k.endswith("checkpoints/checkpoint.pt") for k in stored) == 2

    checkpoints = cluster.user(s3_keys, "ckpt", "runs/")
    for rule in ("bp", "fa"):
        assert any(
            f"-{rule}-{job_id}/checkpoint_" in k and k.endswith("checkpoint.pt")
            for k in checkpoints
        ), checkpoints

    for child in children:  # the data both hosts trained on is the bucket's
        assert child.data.params["data.root"] == data["root"], child.data.params
        (dataset,) = [i.dataset for i in child.inputs.dataset_inputs]
        assert dataset.source_type == "s3" and json.loads(dataset.profile)["train"] == 48

    for host in ("w1", "w2"):  # both hosts hold the whole split, copied once, each its own
        cached = sorted(
            p.relative_to(p.parents[1]).as_posix()
            for p in (cluster.root / f"cache-{host}").rglob("*.tar")
        )
        assert cached == [f"train/shard-0000{i}.tar" for i in range(3)] + [
            f"val/shard-0000{i}.tar" for i in range(2)
        ], (host, cached)

    text = _logs(cluster, job_id)
    assert "setting 'bp' run_id=" in text and "setting 'fa' run_id=" in text
    assert "BIOPROP_RESULT" in text
    # the restart neither started the driver again nor resumed the job into its runs
    assert text.count(f"Running entrypoint for job {job_id}") == 1
    assert "resuming job" not in text


def test_cancel_stops_the_ray_job_and_kills_the_mlflow_runs(cluster: Topology) -> None:
    spec = {**SWEEP, "name": "cluster-cancel", "rule": {"name": "bp"}, "schedule": {"epochs": 500}}
    job_id = _submit(cluster, spec)
    _wait_runs(cluster, job_id, children=1)

    def cancel() -> int:
        with _http(cluster) as http:
            return http.post(f"/v1/experiments/{job_id}/cancel").status_code

    assert cluster.user(cancel) in (200, 202)
    assert _wait(cluster, job_id, timeout=120)["state"] == "CANCELLED"
    assert cluster.user(ray_job, cluster.dashboard, job_id)["status"] == "STOPPED"
    parent, children = _runs(cluster, job_id)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"]
    assert f"Running entrypoint for job {job_id}" in _logs(cluster, job_id)
    # nothing of the job holds the cluster's CPUs any more (its worker group's placement
    # group is removed), so the next job can start
    from cluster_helpers import wait_until

    try:
        wait_until(lambda: not _live_placement_groups(cluster), "placement groups removed", 120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(cluster)}") from None


def test_setting_that_cannot_start_ddp_frees_its_cpus_and_the_next_trains(
    cluster: Topology,
) -> None:
    """The first setting's workers are pointed at a DDP interface no host has
    (``tests/ray_faults.py``: seed 13) after its placement group took both worker CPUs: it
    is FAILED with that reason, and the second setting gets the CPUs and trains across both
    worker nodes; nothing is left reserved."""
    spec = {**SWEEP, "name": "cluster-bad-start", "rule": {"name": "bp"}, "seed": [13, 0]}
    job_id = _submit(cluster, spec)
    job = _wait(cluster, job_id, timeout=400)
    assert job["state"] == "FAILED", job  # one setting failed: the job says so
    _, children = _runs(cluster, job_id)
    runs = {c.data.tags["bioprop.setting"]: c for c in children}
    broken, good = runs["bp seed=13"], runs["bp seed=0"]
    assert broken.info.status == "FAILED"
    assert "nonet13" in broken.data.tags["bioprop.error"]
    assert good.info.status == "FINISHED", good.data.tags.get("bioprop.error")
    assert good.data.metrics["ddp_nodes"] == 2 and good.data.metrics["epoch"] == 1
    from cluster_helpers import wait_until

    try:
        wait_until(lambda: not _live_placement_groups(cluster), "placement groups removed", 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(cluster)}") from None


def _hosts_of(topo: Topology, class_name: str) -> list[str]:
    """The hosts whose Ray node runs a live actor of ``class_name`` (Ray's state API)."""
    host_of = {ip: host for host, ip in topo.ip.items()}
    node_ip = {n["node_id"]: n["node_ip"] for n in topo.user(topo.ray_state, "nodes")}
    return sorted(
        host_of[node_ip[a["node_id"]]]
        for a in topo.user(topo.ray_state, "actors")
        if a["class_name"] == class_name and a["state"] == "ALIVE"
    )


def test_losing_a_worker_node_resumes_from_the_bucket_and_succeeds(cluster: Topology) -> None:
    from cluster_helpers import wait_until
    from mlflow import MlflowClient

    cluster.start_ray_worker("w3", nodes=4)  # the spare: 3 one-CPU nodes for 2 workers
    spec = {**SWEEP, "name": "cluster-node-loss", "rule": {"name": "bp"}}
    # a checkpoint every epoch, however fast: the node is killed once one is registered
    spec.update(schedule={"epochs": 20}, max_failures=2, checkpoint={"min_interval_s": 0})
    job_id = _submit(cluster, spec)
    _wait_runs(cluster, job_id, children=1)

    def registered() -> bool:
        """A checkpoint in the bucket that Ray Train's controller has registered (its
        checkpoint manager's snapshot, in the bucket too, names it): what a restarted
        worker group resumes from. A checkpoint uploaded but not yet registered (the
        controller polls the workers every 2 s) would be trained again from scratch."""
        key = f"runs/cluster-node-loss-bp-{job_id}/checkpoint_manager_snapshot.json"
        if key not in cluster.user(s3_keys, "ckpt", key):
            return False
        return json.loads(cluster.user(s3_text, "ckpt", key)).get("latest_checkpoint_result")

    try:
        wait_until(registered, f"a registered checkpoint of job {job_id} in the bucket", 300)
        hosts = wait_until(
            lambda: _hosts_of(cluster, "RayTrainWorker"), "the Train workers' hosts", 60
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(cluster)}") from None
    assert len(hosts) == 2 and set(hosts) <= {"w1", "w2", "w3"}, hosts
    # the trial and its Train controller sit beside the driver, on the head: a worker
    # node's loss cannot take them with it
    assert _hosts_of(cluster, "TrainController") == ["head"], _diagnosis(cluster)
    lost = hosts[0]
    cluster.procs[f"ray-{lost}"].stop(grace=0, sig=signal.SIGKILL)

    job = _wait(cluster, job_id, timeout=400)
    assert job["state"] == "SUCCEEDED", job.get("error")
    parent, (child,) = _runs(cluster, job_id)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    client = MlflowClient(cluster.mlflow)
    resumed = cluster.user(client.get_metric_history, child.info.run_id, "resumed_from_epoch")
    assert resumed and resumed[-1].value >= 1, resumed  # from a checkpoint, not from scratch
    for name in ("epoch", "train_loss", "val_acc"):  # one point per epoch, retrained or not
        history = cluster.user(client.get_metric_history, child.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, 21)), (name, history)


def _preflight(topo: Topology, host: str) -> subprocess.CompletedProcess:
    """``bioprop preflight`` run on ``host`` as its user would, in the node's environment."""
    cmd = ["ip", "netns", "exec", topo.ns(host), str(BIN / "bioprop"), "preflight",
           "--storage", "s3://ckpt/runs"]  # fmt: skip
    return subprocess.run(
        cmd, env=topo.ray_node_env(), capture_output=True, text=True, timeout=400, cwd=topo.root
    )


def test_preflight_reports_every_node_and_names_the_broken_one(cluster: Topology) -> None:
    """One run over the cluster plus a worker (w4) whose DDP interface does not exist:
    every other node is reported ok, each problem is one line naming w4, exit 1."""
    alive = sorted(
        n["node_ip"] for n in cluster.user(cluster.ray_state, "nodes") if n["state"] == "ALIVE"
    )
    cluster.start_ray_worker("w4", nodes=len(alive) + 1, GLOO_SOCKET_IFNAME="nonet0")
    done = _preflight(cluster, "head")
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    lines = done.stdout.splitlines()
    for ip in alive:  # the head and the worker nodes: one ok line each
        assert any(line.startswith(f"ok {ip} (") for line in lines), report
    problems = [line for line in lines if line.startswith("problem ")]
    w4 = cluster.ip["w4"]
    assert problems and all(w4 in line for line in problems), report
    assert any(
        line.startswith(f"problem {w4} (") and "GLOO_SOCKET_IFNAME=nonet0" in line
        for line in problems
    ), report
    assert any(line.startswith("problem DDP ") for line in problems), report  # w4's pair
