"""How bioprop starts a Ray cluster of its own: :func:`init_local_ray`.

The dashboard is on: Ray Train 2.60 starts a detached ``PlacementGroupCleaner`` per run
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
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

__all__ = ["API_SERVER_VAR", "api_server_address", "init_local_ray"]

API_SERVER_VAR = "RAY_API_SERVER_ADDRESS"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def api_server_address(url: str) -> Iterator[None]:
    """``RAY_API_SERVER_ADDRESS`` is ``url`` inside the block, restored after it. Ray reads it
    before ``RAY_ADDRESS`` wherever it looks for a dashboard (state API, job submission)."""
    previous = os.environ.get(API_SERVER_VAR)
    os.environ[API_SERVER_VAR] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(API_SERVER_VAR, None)
        else:
            os.environ[API_SERVER_VAR] = previous


def init_local_ray(**kwargs: Any) -> Any:
    """``ray.init(address="local", **kwargs)`` (a new cluster, never one ``ray start`` left
    on this host) with its dashboard on 127.0.0.1 and ``RAY_API_SERVER_ADDRESS`` set for the
    cluster's processes; this process's environment is left as it was. Returns Ray's
    context."""
    import ray

    port = _free_port()
    with api_server_address(f"http://127.0.0.1:{port}"):  # inherited by the raylet
        return ray.init(
            address="local",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            **kwargs,
        )
