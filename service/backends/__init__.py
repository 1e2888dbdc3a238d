"""Where a job's driver runs: the scheduler's backends, behind one interface.

- :mod:`service.backends.base`: the interface (:class:`Backend`) and what a backend reports
  (:class:`Unavailable`, :class:`Lost`, :class:`Adopted`);
- :mod:`service.backends.local`: :class:`LocalProcesses`, a driver subprocess per job on
  this host (the default), over :mod:`service.backends.processes`;
- :mod:`service.backends.ray_jobs`: ``RayJobsBackend``, a Ray job per job on a cluster;
- :mod:`service.backends.driver_env`: the one builder of every driver's environment.
"""

from service.backends.base import Adopted, Backend, Lost, Unavailable
from service.backends.local import LocalProcesses

__all__ = ["Adopted", "Backend", "LocalProcesses", "Lost", "Unavailable"]
