"""What the worker loop asks of the process it runs in: its rank, its device, DDP, the
checkpoint to resume from, and where each epoch's metrics and checkpoint go.

:class:`RayTrainSession` answers through Ray Train's worker API (a worker of a
``TorchTrainer`` run: :mod:`trainers.trainer`); :class:`trainers.in_trial.TrialSession` for a
1-worker setting trained inside its Tune trial's process. The loop
(:func:`trainers.worker.run_worker_loop`) is the same for both.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["RayTrainSession", "Session"]


class Session(Protocol):
    #: log an epoch to MLflow before reporting it (else after: the MLflow history then
    #: never runs ahead of the checkpoints the session has registered)
    log_before_report: bool

    def rank_world(self) -> tuple[int, int]:
        """``(rank, world size)`` of this worker."""

    def device(self, gpu: bool) -> torch.device:
        """This worker's device (the CPU unless the spec asks for a GPU)."""

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """``model`` on this worker's device, wrapped for DDP when the world is larger than 1."""

    def get_checkpoint(self) -> Any:
        """The ``ray.train.Checkpoint`` to resume from, or None."""

    def report(self, metrics: dict[str, float], checkpoint: Any) -> None:
        """Hand on an epoch's metrics and (rank 0, checkpoint epochs) a local checkpoint
        folder as a ``ray.train.Checkpoint``, persisted before this returns."""


class RayTrainSession:
    """A worker of a Ray Train run: ``ray.train``'s context, checkpoint and report. The
    report is handed to the Train controller, which registers its checkpoint a moment
    later: an epoch is logged after it."""

    log_before_report = False

    def rank_world(self) -> tuple[int, int]:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size()

    def device(self, gpu: bool) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device() if gpu else torch.device("cpu")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def get_checkpoint(self) -> Any:
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, float], checkpoint: Any) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=checkpoint)
