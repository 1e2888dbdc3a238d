"""What a job asks of the cluster, and what the cluster has: the scheduler keeps a job
PENDING while the running jobs leave too little of ``CLUSTER_CPUS`` / ``CLUSTER_GPUS``.

A job's demand is its spec's ``scale``, as the driver hands it to Ray Train's
``ScalingConfig``: ``workers x cpus_per_worker`` CPUs, and ``workers`` GPUs when
``scale.gpu`` (one GPU per worker), times the settings it trains at once: a sweep or search
runs its trials side by side (Ray Tune), as many as it has, at most ``sweep.max_concurrent``,
and, when the capacity is set, at most as many as the whole cluster holds (what the driver
itself does with Ray's resources). An unset capacity is unlimited (then Ray Train waits for
the workers' resources inside the running driver, and the job shows RUNNING meanwhile).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainers.spec import ExperimentSpec, ScaleSpec

__all__ = [
    "Resources",
    "capacity",
    "concurrent_trials",
    "demand",
    "held",
    "scale_demand",
    "shortfall",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.gpus - other.gpus)

    def times(self, n: int) -> Resources:
        return Resources(self.cpus * n, self.gpus * n)

    def fits(self, free: Resources) -> bool:
        return self.cpus <= free.cpus and self.gpus <= free.gpus

    def __str__(self) -> str:
        def num(value: float) -> str:
            return "unlimited" if math.isinf(value) else f"{value:g}"

        return f"{num(self.cpus)} CPUs, {num(self.gpus)} GPUs"


def scale_demand(scale: ScaleSpec) -> Resources:
    """Resources one setting with this ``scale`` holds while it runs."""
    return Resources(
        cpus=float(scale.workers * scale.cpus_per_worker),
        gpus=float(scale.workers if scale.gpu else 0),
    )


def concurrent_trials(spec: ExperimentSpec, total: Resources | None = None) -> int:
    """How many settings of ``spec`` train at once: its trials (grid points times searched
    samples), at most ``sweep.max_concurrent``, at most what ``total`` holds (at least one)."""
    n = spec.trial_count()
    if spec.sweep.max_concurrent:
        n = min(n, spec.sweep.max_concurrent)
    one = scale_demand(spec.scale)
    if total is not None:
        for have, need in ((total.cpus, one.cpus), (total.gpus, one.gpus)):
            if need > 0 and math.isfinite(have):
                n = min(n, max(1, math.floor(have / need)))
    return max(1, n)


def demand(spec: dict[str, Any], total: Resources | None = None) -> Resources:
    """What a stored job ``spec`` (JSON) holds while it runs: :func:`scale_demand` times
    :func:`concurrent_trials` in a cluster of ``total``; ``ValueError`` (pydantic's
    ``ValidationError``) when the spec does not validate."""
    loaded = ExperimentSpec.model_validate(spec)
    return scale_demand(loaded.scale).times(concurrent_trials(loaded, total))


def held(specs: Iterable[dict[str, Any] | None], total: Resources | None = None) -> Resources:
    """What jobs with these stored specs hold together (in a cluster of ``total``); a spec
    that no longer validates counts as none (its driver fails and says why)."""
    used = Resources()
    for spec in specs:
        try:
            used = used + demand(spec or {}, total)
        except (ValueError, ArithmeticError) as exc:
            log.warning("job spec that no longer validates counts as no demand: %s", exc)
    return used


def capacity(cpus: float | None, gpus: float | None) -> Resources:
    """The cluster's resources from the settings; None is unlimited."""
    return Resources(
        cpus=math.inf if cpus is None else float(cpus),
        gpus=math.inf if gpus is None else float(gpus),
    )


def shortfall(scale: ScaleSpec, total: Resources) -> list[tuple[str, str]]:
    """``(scale field, reason)`` for each resource a job of this ``scale`` needs more of than
    the whole cluster has: such a job would wait forever, so submission refuses it."""
    need = scale_demand(scale)
    problems = []
    if need.cpus > total.cpus:
        problems.append(
            (
                "cpus_per_worker",
                f"the job needs {need.cpus:g} CPUs ({scale.workers} workers x "
                f"{scale.cpus_per_worker} cpus_per_worker) but the cluster has "
                f"{total.cpus:g} (BIOPROP_CLUSTER_CPUS)",
            )
        )
    if need.gpus > total.gpus:
        problems.append(
            (
                "workers",
                f"the job needs {need.gpus:g} GPUs (one per worker, {scale.workers} workers) "
                f"but the cluster has {total.gpus:g} (BIOPROP_CLUSTER_GPUS)",
            )
        )
    return problems
