"""``bioprop preflight``: is this Ray cluster ready for bioprop? Checked on every node.

Run from any node of the cluster (it joins the one ``RAY_ADDRESS`` names, as ``bioprop run``
does). On every alive node, a task pinned there (0 CPUs) checks what training needs of that
node: bioprop imports (``trainers``, ``data_pipelines``), DALI loads, the storage location
(``--storage``, else ``BIOPROP_STORAGE_PATH``) can be listed with the node's credentials,
the node's environment has the Ray token when the cluster uses token auth, and DDP has a
usable interface (``GLOO_SOCKET_IFNAME`` names one the node has, or the host name does not
resolve to a loopback address). Then two processes on two nodes that train (CPUs > 0) set
up a Gloo process group and all-reduce one tensor, for the first such node with each other
one, as Ray Train's DDP set-up does.

The report: one line per node that passed, and one line per problem, each naming the node
(``<ip> (<hostname>)``). :func:`check_cluster` returns them; the command exits 1 when there
is a problem.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from datetime import timedelta
from typing import Any

__all__ = ["NodeReport", "check_cluster", "check_node"]

TIMEOUT_S = 120.0

NodeReport = dict[str, Any]  # {"node": "<ip> (<hostname>)", "problems": [str, ...]}


def _token_digest() -> str | None:
    token = os.environ.get("RAY_AUTH_TOKEN")
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def check_node(storage: str | None, token_digest: str | None, multi_node: bool) -> NodeReport:
    """The checks of one node, run there. ``token_digest``: the SHA-256 of the Ray token
    of the process that asked (None: no token auth), compared, never sent in clear;
    ``multi_node``: DDP crosses hosts, so loopback will not do."""
    import ray

    ip = ray.util.get_node_ip_address()
    node = f"{ip} ({socket.gethostname()})"
    problems = []
    try:
        import data_pipelines  # noqa: F401
        import trainers.launch  # noqa: F401
    except Exception as exc:
        problems.append(f"bioprop does not import: {exc!r}")
    try:
        import nvidia.dali  # noqa: F401
    except Exception as exc:
        problems.append(f"DALI does not load: {exc!r}")
    if storage:
        try:
            from trainers.storage import check_storage

            check_storage(storage)
        except Exception as exc:
            problems.append(f"storage {storage}: {exc}")
    if token_digest and _token_digest() != token_digest:
        what = "is not set" if _token_digest() is None else "differs from the one used here"
        problems.append(f"RAY_AUTH_TOKEN {what} in this node's Ray environment")
    problems += _ddp_interface_problems(multi_node)
    return {"node": node, "ip": ip, "problems": [_one_line(p) for p in problems]}


def _ddp_interface_problems(multi_node: bool) -> list[str]:
    names = [name for _, name in socket.if_nameindex()]
    problems = []
    for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        value = os.environ.get(var)
        missing = [n for n in (value or "").split(",") if n and n.lstrip("^=") not in names]
        if value and missing:
            problems.append(f"{var}={value}: no interface {missing[0]} here (has {names})")
    if multi_node and not os.environ.get("GLOO_SOCKET_IFNAME"):
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError as exc:
            return [*problems, f"host name {socket.gethostname()!r} does not resolve: {exc}"]
        if address.startswith("127."):
            problems.append(
                f"host name resolves to {address} and GLOO_SOCKET_IFNAME is not set: DDP "
                "would listen on loopback (set it to the cluster's interface)"
            )
    return problems


class _DDPPeer:
    """One end of the two-node DDP check (a Ray actor pinned to its node)."""

    def address(self) -> tuple[str, int]:
        import ray

        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def all_reduce(self, master: str, port: int, rank: int, timeout_s: float) -> float:
        import torch
        import torch.distributed as dist

        dist.init_process_group(
            "gloo",
            init_method=f"tcp://{master}:{port}",
            rank=rank,
            world_size=2,
            timeout=timedelta(seconds=timeout_s),
        )
        try:
            value = torch.ones(1)
            dist.all_reduce(value)
            return float(value.item())
        finally:
            dist.destroy_process_group()


def _ddp_pair(a: dict, b: dict, timeout_s: float) -> str | None:
    """A problem with DDP between nodes ``a`` and ``b`` (``ray.nodes()`` entries), or None."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def peer(node: dict):
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        return ray.remote(num_cpus=0)(_DDPPeer).options(scheduling_strategy=strategy).remote()

    first, second = peer(a), peer(b)
    names = f"{a['NodeManagerAddress']} <-> {b['NodeManagerAddress']}"
    try:
        master, port = ray.get(first.address.remote(), timeout=timeout_s)
        pending = [
            first.all_reduce.remote(master, port, 0, timeout_s),
            second.all_reduce.remote(master, port, 1, timeout_s),
        ]
        values, deadline = [], time.monotonic() + timeout_s + 30
        while pending:  # one end failing is the answer: the other would wait out its timeout
            ready, pending = ray.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                return f"DDP {names}: no all-reduce within {timeout_s:.0f} s"
            values.append(ray.get(ready[0]))
        if values != [2.0, 2.0]:
            return f"DDP {names}: all-reduce of 1 + 1 gave {values}"
        return None
    except Exception as exc:
        return f"DDP {names}: {_one_line(exc)}"
    finally:
        for actor in (first, second):
            ray.kill(actor)


def check_cluster(
    storage: str | None = None,
    *,
    ddp: bool = True,
    expect: list[str] = (),
    timeout_s: float = TIMEOUT_S,
) -> tuple[list[str], list[str]]:
    """``(ok lines, problem lines)`` for every alive node of the Ray cluster this process is
    connected to (:func:`ray.init` first); ``expect``: node addresses that must be among
    them (a node whose ``ray start`` failed, e.g. without the cluster's Ray token, never
    joins, so only a list of the expected ones can name it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    joined = {n["NodeManagerAddress"] for n in nodes}
    missing = [
        f"{ip}: not a node of this cluster (did `ray start` fail there? a node without the "
        "cluster's RAY_AUTH_TOKEN cannot join)"
        for ip in expect
        if ip not in joined
    ]
    digest = _token_digest() if os.environ.get("RAY_AUTH_MODE") == "token" else None
    check = ray.remote(num_cpus=0)(check_node)
    refs = {
        n["NodeID"]: check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(storage, digest, len(nodes) > 1)
        for n in nodes
    }
    ok, problems = [], missing
    for node in nodes:
        try:
            report = ray.get(refs[node["NodeID"]], timeout=timeout_s)
        except Exception as exc:
            problems.append(
                f"{node['NodeManagerAddress']}: the check did not run: {_one_line(exc)}"
            )
            continue
        problems += [f"{report['node']}: {p}" for p in report["problems"]]
        if not report["problems"]:
            ok.append(f"{report['node']}: ok (bioprop, DALI, storage, Ray token, DDP interface)")
    trainers = [n for n in nodes if n.get("Resources", {}).get("CPU", 0) > 0]
    if ddp and len(trainers) >= 2:
        for other in trainers[1:]:
            problem = _ddp_pair(trainers[0], other, timeout_s)
            if problem:
                problems.append(problem)
            else:
                ok.append(
                    f"DDP {trainers[0]['NodeManagerAddress']} <-> "
                    f"{other['NodeManagerAddress']}: ok (gloo all-reduce)"
                )
    elif ddp:
        ok.append(f"DDP: not checked ({len(trainers)} node(s) with CPUs; it needs two)")
    return ok, problems
