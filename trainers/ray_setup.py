"""How bioprop starts a Ray cluster of its own: :func:`init_local_ray`.

The dashboard is on when a job runs Ray Train runs (settings of more than one worker; a
1-worker setting trains in its Tune trial, :mod:`trainers.in_trial`, and needs none of
this): Ray Train 2.60 starts a detached ``PlacementGroupCleaner`` per run
that asks Ray's state API (served by the dashboard) once a second whether the run's train
controller lives, and removes the worker group's placement group when it does not. Tune
ends a trial it stops early (ASHA) or cancels by killing that controller, so without a
dashboard the stopped trial's CPUs stayed reserved until the driver exited and the next
trials of the same sweep waited for them forever.

The cleaner finds the state API the way Ray's CLI does: ``RAY_API_SERVER_ADDRESS``, else
``RAY_ADDRESS``, else the one Ray instance running on the host. With two local clusters on
one machine (two ``bioprop run``, or a run beside the test suite) that last step fails
("Found multiple active Ray instances") and the leak is back. So the dashboard gets a port
chosen here, and every process of the new cluster (raylet, workers, the cleaner) inherits
``RAY_API_SERVER_ADDRESS`` naming it.

Lighter where a one-machine cluster allows (every setting of a sweep pays for each Ray
process it starts, 1-10 s apiece on a loaded 2-core machine; ``docs/benchmarks.md``):

- no Ray Train preemption watcher (``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``, the
  cluster's processes inherit it): one actor less per setting; it watches for nodes being
  drained, which a cluster of this one machine never does. A cluster started by
  ``ray start`` (``RAY_ADDRESS``) keeps Ray's default;
- no idle workers prestarted when the first driver connects
  (``prestart_worker_first_driver``): none of them ever ran an actor of a job, and their
  start competed for the CPUs with the driver's own start-up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

__all__ = [
    "API_SERVER_VAR",
    "LOCAL_CLUSTER_ENV",
    "LOCAL_SYSTEM_CONFIG",
    "api_server_address",
    "environment",
    "init_local_ray",
    "ray_connected",
]

API_SERVER_VAR = "RAY_API_SERVER_ADDRESS"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: environment of a cluster bioprop starts itself (a value already set is kept)
LOCAL_CLUSTER_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
#: Ray system config of such a cluster
LOCAL_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block, restored after it."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def api_server_address(url: str) -> Iterator[None]:
    """``RAY_API_SERVER_ADDRESS`` is ``url`` inside the block, restored after it. Ray reads it
    before ``RAY_ADDRESS`` wherever it looks for a dashboard (state API, job submission)."""
    with environment({API_SERVER_VAR: url}):
        yield


def ray_connected() -> bool:
    """Whether this process is connected to a Ray cluster (asked without importing Ray: a
    process that never imported it is not)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def init_local_ray(*, dashboard: bool = True, **kwargs: Any) -> Any:
    """``ray.init(address="local", **kwargs)`` (a new cluster, never one ``ray start`` left
    on this host) with :data:`LOCAL_CLUSTER_ENV` set for the cluster's processes and
    :data:`LOCAL_SYSTEM_CONFIG`; with ``dashboard``, its dashboard on 127.0.0.1 and
    ``RAY_API_SERVER_ADDRESS`` naming it (without, no dashboard: about 2 s of start-up and
    a dozen processes less). This process's environment is left as it was. Returns Ray's
    context."""
    import ray

    env = {k: v for k, v in LOCAL_CLUSTER_ENV.items() if k not in os.environ}
    kwargs.setdefault("_system_config", dict(LOCAL_SYSTEM_CONFIG))
    if not dashboard:
        with environment(env):
            return ray.init(address="local", include_dashboard=False, **kwargs)
    port = _free_port()
    with api_server_address(f"http://127.0.0.1:{port}"), environment(env):  # to the raylet
        return ray.init(
            address="local",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            **kwargs,
        )
