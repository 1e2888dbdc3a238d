"""What a job asks of the cluster, and what the cluster has: the scheduler keeps a job
PENDING while the running jobs leave too little of ``CLUSTER_CPUS`` / ``CLUSTER_GPUS``.

A job's demand is its spec's ``scale``, as the driver hands it to Ray Train's
``ScalingConfig``: ``workers x cpus_per_worker`` CPUs, and ``workers`` GPUs when
``scale.gpu`` (one GPU per worker). A sweep runs its settings one after another, so the
demand is that of one setting. An unset capacity is unlimited (then Ray Train waits for the
workers' resources inside the running driver, and the job shows RUNNING meanwhile).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainers.spec import ScaleSpec

__all__ = ["Resources", "capacity", "demand", "held", "scale_demand", "shortfall"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.gpus - other.gpus)

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


def demand(spec: dict[str, Any]) -> Resources:
    """:func:`scale_demand` of a stored job ``spec`` (JSON); ``ValueError`` (pydantic's
    ``ValidationError``) when its ``scale`` does not validate."""
    return scale_demand(ScaleSpec.model_validate(spec.get("scale") or {}))


def held(specs: Iterable[dict[str, Any] | None]) -> Resources:
    """What jobs with these stored specs hold together; a spec whose ``scale`` no longer
    validates counts as none (its driver fails and says why)."""
    total = Resources()
    for spec in specs:
        try:
            total = total + demand(spec or {})
        except (ValueError, ArithmeticError) as exc:
            log.warning("job spec with an invalid scale section counts as no demand: %s", exc)
    return total


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
