"""A cluster's topology as real hosts on this machine: one network namespace per host.

    user 10.13.0.8 --+
    cp   10.13.0.5 --+  control plane: ``bioprop serve``, configured only by CONTROL_PLANE_ENV
    ml   10.13.0.6 --+  MLflow server: PostgreSQL backend, proxied artifacts into s3://mlflow
    s3   10.13.0.7 --+  moto's server mode: the S3 endpoint (buckets ``ckpt``, ``mlflow``)
    head 10.13.0.2 --+  Ray head: ``ray start --head --num-cpus 0``, dashboard + Jobs API
    w1   10.13.0.3 --+  Ray worker node (1 CPU)
    w2   10.13.0.4 --+  Ray worker node (1 CPU)
    w3   10.13.0.9 --+  Ray worker node (1 CPU), started by the node-loss test: the spare
    w4   10.13.0.10 -+  Ray worker node (1 CPU) without a usable DDP interface (preflight test)
                     bridge in a namespace of its own (``sw``)

Every address lives inside a namespace this module creates; the host's own namespaces are
not touched. Filesystems are shared (as a cluster's ReadWriteMany volume would be): the
synthetic data cache and the control plane's run folder sit in the test's temp folder.
PostgreSQL is the machine's server (127.0.0.1:5432), reached from the ``ml`` and ``cp``
hosts through its Unix socket (namespaces separate networks, not files), in two fresh
databases created here and dropped afterwards. Ray's token auth is on for every node.
The test process talks to the hosts from the ``user`` namespace (one thread that entered it).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cluster_helpers import (
    BIN,
    RAY_TOKEN,
    Proc,
    http_ok,
    ray_env,
    ray_headers,
    ray_start_cmd,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.13.0"
HOSTS = {"head": 2, "w1": 3, "w2": 4, "cp": 5, "ml": 6, "s3": 7, "user": 8, "w3": 9, "w4": 10}
PG_SOCKET_DIR = "/var/run/postgresql"
API_TOKEN = "cluster-test-token"
AWS = {
    "AWS_ACCESS_KEY_ID": "bioprop-test",
    "AWS_SECRET_ACCESS_KEY": "bioprop-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": f"http://{SUBNET}.{HOSTS['s3']}:5000",
}

# What the control plane gets, and all it gets (besides PATH/PYTHONPATH and the AWS
# credentials its start-up check of BIOPROP_STORAGE_PATH uses): the variables the
# deployment's control-plane manifest sets. ``{...}`` are filled per run.
CONTROL_PLANE_ENV = {
    "BIOPROP_ENVIRONMENT": "production",
    "BIOPROP_API_TOKENS": "{api_token}",
    "BIOPROP_DB_URL": "{jobs_db_url}",
    "BIOPROP_RUN_DIR": "{shared}/runs",
    "BIOPROP_DATA_DIRS": "{shared}/data",
    "BIOPROP_RAY_JOBS_URL": "http://{head}:8265",
    "BIOPROP_STORAGE_PATH": "s3://ckpt/runs",
    "BIOPROP_DATA_CACHE": "{shared}/cache",
    "BIOPROP_MAX_CONCURRENT_JOBS": "2",
    "BIOPROP_RAY_CAPACITY": "true",
    "MLFLOW_TRACKING_URI": "http://{ml}:5000",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": "{ray_token}",
}

# The Ray nodes' start commands (KubeRay generates the same from rayStartParams).
RAY_HEAD_ARGS = ["--head", "--num-cpus", "0", "--port", "6379", "--dashboard-host", "0.0.0.0"]
RAY_WORKER_ARGS = ["--num-cpus", "1"]
SMALL_OBJECT_STORE = ["--object-store-memory", str(200 * 2**20)]  # the test moves no data

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def can_make_netns() -> str | None:
    """None when this process can create network namespaces, else why not."""
    if shutil.which("ip") is None:
        return "no `ip` command (Debian's iproute2)"
    probe = f"b13probe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", "postgres", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _enter_netns(name: str) -> None:
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


class Topology:
    """Builds the hosts, starts the services, and takes all of it down in ``close()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = "b13" + uuid.uuid4().hex[:4]
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.shared = root / "shared"
        (self.shared / "data").mkdir(parents=True)
        self.namespaces: list[str] = []
        self.procs: dict[str, Proc] = {}
        self.databases: list[str] = []
        self._user: ThreadPoolExecutor | None = None
        self.ip = {host: f"{SUBNET}.{n}" for host, n in HOSTS.items()}
        self.dashboard = f"http://{self.ip['head']}:8265"
        self.api = f"http://{self.ip['cp']}:8000"
        self.mlflow = f"http://{self.ip['ml']}:5000"
        self.temp = Path("/tmp") / self.tag  # Ray's session folder (short: socket paths)

    # network ---------------------------------------------------------------------------
    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def build_network(self) -> None:
        sw = self.ns("sw")
        for name in [sw, *(self.ns(h) for h in HOSTS)]:
            _sh("ip", "netns", "add", name)
            self.namespaces.append(name)
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", sw, "link", "set", "br0", "up")
        for host, n in HOSTS.items():
            peer = f"p{n}"
            _sh("ip", "link", "add", "eth0", "netns", self.ns(host), "type", "veth", "peer",
                "name", peer, "netns", sw)  # fmt: skip
            _sh("ip", "-n", sw, "link", "set", peer, "master", "br0", "up")
            _sh("ip", "-n", self.ns(host), "addr", "add", f"{self.ip[host]}/24", "dev", "eth0")
            _sh("ip", "-n", self.ns(host), "link", "set", "eth0", "up")

    def user(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in the test's thread inside the ``user`` host's namespace."""
        if threading.current_thread().name.startswith("netns-user"):
            return fn(*args, **kwargs)  # already there (a nested call)
        if self._user is None:
            self._user = ThreadPoolExecutor(
                1, thread_name_prefix="netns-user", initializer=_enter_netns,
                initargs=(self.ns("user"),),
            )  # fmt: skip
        return self._user.submit(fn, *args, **kwargs).result()

    # services --------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONPATH"] = str(REPO)
        return env

    def start(self, name: str, host: str, cmd: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, cmd, env=env, log_dir=self.logs, netns=self.ns(host), cwd=self.root)
        self.procs[name] = proc
        return proc

    def start_s3(self) -> None:
        env = {**self.base_env(), **AWS}
        s3 = self.start("s3", "s3", [sys.executable, "-m", "moto.server", "-H", "0.0.0.0",
                                     "-p", "5000"], env)  # fmt: skip
        url = AWS["AWS_ENDPOINT_URL"]
        self.user(wait_until, lambda: http_ok(f"{url}/moto-api/"), "moto S3", 60, [s3])

        def buckets() -> None:
            import boto3

            client = boto3.client("s3", endpoint_url=url, **_aws_kwargs())
            for bucket in ("ckpt", "mlflow"):
                client.create_bucket(Bucket=bucket)

        self.user(buckets)

    def create_databases(self) -> tuple[str, str]:
        names = (f"{self.tag}_mlflow", f"{self.tag}_jobs")
        for name in names:
            _psql(f"CREATE DATABASE {name}")
            self.databases.append(name)
        return tuple(
            f"postgresql+psycopg://postgres@/{name}?host={PG_SOCKET_DIR}" for name in names
        )  # type: ignore[return-value]

    def start_mlflow(self, db_url: str) -> None:
        env = {**self.base_env(), **AWS, "MLFLOW_S3_ENDPOINT_URL": AWS["AWS_ENDPOINT_URL"]}
        cmd = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", db_url,
            "--serve-artifacts", "--artifacts-destination", "s3://mlflow/artifacts",
            "--host", "0.0.0.0", "--port", "5000", "--workers", "1",
            "--allowed-hosts", f"{self.ip['ml']}:5000,{self.ip['ml']},mlflow:5000,mlflow",
        ]  # fmt: skip
        self.start("mlflow", "ml", cmd, env)

    def wait_mlflow(self) -> None:
        self.user(
            wait_until, lambda: http_ok(f"{self.mlflow}/health"), "MLflow server", 180,
            [self.procs["mlflow"]],
        )  # fmt: skip

    def ray_node_env(self) -> dict[str, str]:
        return ray_env(
            self.base_env(),
            # the hosts share one hostname (namespaces separate networks, not UTS), which
            # resolves to 127.0.0.1: gloo must take the address of the host's own interface
            GLOO_SOCKET_IFNAME="eth0",
            # this cluster, not another Ray on the machine (Ray's "auto" finds them all)
            RAY_ADDRESS=f"{self.ip['head']}:6379",
            # generous start-up limit: the test shares two cores with whatever else runs
            RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="300",
            # Ray's OOM killer reads the memory of the whole machine, shared with other work
            RAY_memory_monitor_refresh_ms="0",
            # the injected fault of tests/ray_faults.py: DDP of settings with seed 13 only
            RAY_TRAIN_CALLBACKS="tests.ray_faults.BreakDDPOfSeed13",
            **AWS,
        )

    def start_ray_head(self) -> None:
        args = [*RAY_HEAD_ARGS, *SMALL_OBJECT_STORE, "--node-ip-address", self.ip["head"],
                "--temp-dir", str(self.temp / "head")]  # fmt: skip
        self.start("ray-head", "head", ray_start_cmd(*args), self.ray_node_env())

    def wait_ray_head(self) -> None:
        self.user(
            wait_until,
            lambda: http_ok(f"{self.dashboard}/api/version", headers=ray_headers()),
            "Ray dashboard",
            180,
            [self.procs["ray-head"]],
        )  # fmt: skip

    def start_ray_worker(self, host: str, nodes: int, **env: str) -> None:
        """Start a worker node (``env`` added to its environment) and wait until the cluster
        has ``nodes`` alive. Ray gives a raylet 30 s to register (fixed in Ray); on a loaded
        machine that can pass, so a node that gave up is started once more."""
        args = [*RAY_WORKER_ARGS, *SMALL_OBJECT_STORE, "--address", f"{self.ip['head']}:6379",
                "--node-ip-address", self.ip[host], "--temp-dir", str(self.temp / host)]  # fmt: skip
        for attempt in range(3):
            proc = self.start(
                f"ray-{host}", host, ray_start_cmd(*args), {**self.ray_node_env(), **env}
            )
            try:
                # `ray start` says so once its raylet registered (a lost node of the same
                # address may still count as alive, so the node count alone proves nothing)
                wait_until(
                    lambda p=proc: "Ray runtime started" in p.tail(200_000), f"Ray node {host}",
                    120, [proc],
                )  # fmt: skip
                self.wait_ray_nodes(nodes)
                return
            except AssertionError:
                if attempt == 2:
                    raise
                self.procs.pop(f"ray-{host}").stop()

    def alive_ray_nodes(self) -> int:
        import httpx
        from cluster_helpers import ray_headers

        response = httpx.get(
            f"{self.dashboard}/nodes?view=summary", headers=ray_headers(), timeout=10
        )
        nodes = response.json()["data"]["summary"]
        return sum(1 for n in nodes if n["raylet"]["state"] == "ALIVE")

    def wait_ray_nodes(self, count: int, timeout: float = 120) -> None:
        # the nodes still running: one a test stopped on purpose (a node loss) is not waited on
        procs = [p for n, p in self.procs.items() if n.startswith("ray-") and p.alive()]
        self.user(
            wait_until, lambda: self.alive_ray_nodes() >= count, f"{count} Ray nodes", timeout,
            procs,
        )  # fmt: skip

    def control_plane_env(self, jobs_db_url: str) -> dict[str, str]:
        values = {
            "api_token": API_TOKEN,
            "jobs_db_url": jobs_db_url,
            "shared": str(self.shared),
            "head": self.ip["head"],
            "ml": self.ip["ml"],
            "ray_token": RAY_TOKEN,
        }
        env = {**self.base_env(), **AWS}
        env.update({k: v.format(**values) for k, v in CONTROL_PLANE_ENV.items()})
        return env

    def control_plane_python(self) -> Path:
        """An interpreter path that only the control plane's host has, as on a real cluster
        where the control plane's image lays its Python out differently from the Ray
        head's: a virtual environment of its own (``cp-venv``: pyvenv.cfg and a ``python``
        link beside the test's environment's packages) whose ``python`` is removed once the
        control plane runs (:meth:`start_control_plane`)."""
        venv = self.root / "cp-venv"
        if not venv.exists():
            (venv / "bin").mkdir(parents=True)
            real = Path(sys.prefix)
            shutil.copy(real / "pyvenv.cfg", venv / "pyvenv.cfg")
            (venv / "lib").symlink_to(real / "lib")
        return venv / "bin" / "python"

    def start_control_plane(self, env: dict[str, str], name: str = "control-plane") -> Proc:
        python = self.control_plane_python()
        python.unlink(missing_ok=True)
        python.symlink_to(Path(sys.executable).resolve())
        cmd = [str(python), "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", "8000"]
        try:
            proc = self.start(name, "cp", cmd, env)
            self.user(wait_until, lambda: http_ok(f"{self.api}/healthz"), name, 120, [proc])
        finally:
            python.unlink()  # the Ray head (and every other host) lacks this interpreter
        return proc

    # teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process (workers, then head, then the rest), drop the databases,
        delete the namespaces. Each step runs even when an earlier one failed."""
        order = sorted(self.procs, key=lambda n: (not n.startswith("ray-w"), n == "ray-head"))
        for name in order:
            try:
                self.procs[name].stop(grace=10, sig=signal.SIGTERM)
            except Exception:
                pass
        if self._user is not None:
            self._user.shutdown(wait=False, cancel_futures=True)
        for name in self.databases:
            try:
                _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception:
                pass
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.keep_ray_logs()
        shutil.rmtree(self.temp, ignore_errors=True)

    def keep_ray_logs(self) -> None:
        """Copy every node's Ray logs (raylet, GCS, workers, job drivers) from Ray's session
        folders, deleted at teardown, into ``logs/ray/<host>`` beside the other logs."""
        for session in self.temp.glob("*/session_*/logs"):
            if session.parent.is_symlink():
                continue  # session_latest: the same folder twice
            host = session.parents[1].name
            dest = self.logs / "ray" / host / session.parent.name
            shutil.copytree(session, dest, ignore_dangling_symlinks=True, dirs_exist_ok=True)

    def ray_state(self, kind: str) -> list[dict[str, Any]]:
        """Ray's state API list of ``kind`` (``actors``, ``placement_groups``, ``nodes``)."""
        import httpx

        response = httpx.get(
            f"{self.dashboard}/api/v0/{kind}",
            params={"limit": 10000, "detail": "true"},
            headers=ray_headers(),
            timeout=30,
        )
        return response.json()["data"]["result"]["result"]


def _aws_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS["AWS_DEFAULT_REGION"],
    }


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    """Every key in ``bucket`` under ``prefix`` (call it through ``Topology.user``)."""
    import boto3

    client = boto3.client("s3", endpoint_url=AWS["AWS_ENDPOINT_URL"], **_aws_kwargs())
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def s3_text(bucket: str, key: str) -> str:
    """The object ``key`` of ``bucket`` as text (call it through ``Topology.user``)."""
    import boto3

    client = boto3.client("s3", endpoint_url=AWS["AWS_ENDPOINT_URL"], **_aws_kwargs())
    return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
