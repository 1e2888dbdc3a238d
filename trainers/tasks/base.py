"""What the one worker loop (:mod:`trainers.worker`) and every task share: the worker's
environment (:class:`WorkerEnv`), the :class:`Task` interface a task implements, and
:func:`all_reduce_sum`. Tasks import this module, never the worker loop, so the loop can
import the task registry without a cycle.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

import data_pipelines
from trainers.spec import ExperimentSpec

__all__ = ["Task", "WorkerEnv", "all_reduce_sum"]


class WorkerEnv(NamedTuple):
    """What every Ray Train worker starts from: the resolved spec, its MLflow run, this
    rank's place in the group and its device; :meth:`loader` builds this rank's shard."""

    spec: ExperimentSpec
    run_id: str
    uri: str
    rank: int
    world: int
    device: torch.device

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast on CUDA, a no-op elsewhere."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def loader(self, split: str, seed: int):
        """This rank's shard of ``split``, ``spec.batch_size // world`` per step."""
        return data_pipelines.build_loader(
            self.spec.data,
            split,
            batch_size=max(1, self.spec.batch_size // self.world),
            shard_id=self.rank,
            num_shards=self.world,
            seed=seed,
        )


class Task:
    """What a task (``classify``, ``detect``) tells the worker loop; one instance per task.

    ``sums``: the names of the per-epoch train metrics :meth:`step` returns sums of.
    ``channels_last``: put the model (and the task's inputs) in channels-last memory format
    when running with AMP.
    """

    sums: tuple[str, ...] = ()
    channels_last: bool = False

    def build(self, env: WorkerEnv, val_loader: Any) -> nn.Module:
        """The spec's model, seeded from ``spec.seed`` and converted to its rule."""
        raise NotImplementedError

    def step(
        self, model: nn.Module, batch: Any, env: WorkerEnv
    ) -> tuple[Tensor, dict[str, Tensor], float]:
        """Forward one train batch: ``(loss to backpropagate, {name: detached float64 sum
        over the batch's samples} for every name of :attr:`sums`, number of samples)``. The
        epoch's metric ``name`` is that sum over batches and ranks over the sample count."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, val_loader: Any, env: WorkerEnv) -> dict[str, float]:
        """Validation metrics, the same on every rank (a collective: every rank calls it)."""
        raise NotImplementedError

    def probe(self, val_loader: Any, env: WorkerEnv) -> Any:
        """The fixed batch gradient alignment is measured on (rank 0), or None."""
        raise NotImplementedError

    def probe_alignment(self, model: nn.Module, probe: Any, env: WorkerEnv) -> dict[str, float]:
        """``galign_<layer>.grad_angle`` ... : rule vs exact-BP weight gradients on ``probe``."""
        raise NotImplementedError


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over every rank (float64), returned on every rank."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()
