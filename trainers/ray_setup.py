"""How bioprop starts a Ray cluster of its own (``ray.init(address="local", **LOCAL_RAY)``).

The dashboard is on: Ray Train 2.60 starts a detached ``PlacementGroupCleaner`` per run
that asks Ray's state API (served by the dashboard) once a second whether the run's train
controller lives, and removes the worker group's placement group when it does not. Tune
ends a trial it stops early (ASHA) or cancels by killing that controller, so without a
dashboard the stopped trial's CPUs stayed reserved until the driver exited and the next
trials of the same sweep waited for them forever.
"""

from __future__ import annotations

__all__ = ["LOCAL_RAY"]

LOCAL_RAY = {"include_dashboard": True, "dashboard_host": "127.0.0.1"}
