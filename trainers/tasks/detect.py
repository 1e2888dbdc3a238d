"""Detection: RetinaNet's focal and box losses (:mod:`trainers.detection`); per epoch ``loss``
(also as ``train_loss``), ``loss_classification``, ``loss_bbox_regression`` (image-weighted
means over all ranks) and ``map``, ``map_50``, ``map_75`` over the val split (every rank's
detections gathered).

``optim.clip_grad_norm`` matters here: RetinaNet trained from scratch without it diverged
(BP, lr 0.01, batch 8: weights at 1e15 by step 65); with it at 10 it trained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import data_pipelines
from trainers.detection import (
    all_gather_detections,
    build_retinanet,
    detection_step,
    evaluate_map,
    probe_alignment,
    to_device,
)
from trainers.tasks._registry import register_task
from trainers.tasks.base import Task, WorkerEnv

__all__ = ["Detect"]


@register_task("detect")
class Detect(Task):
    sums = ("loss", "train_loss", "loss_classification", "loss_bbox_regression")

    def build(self, env: WorkerEnv, val_loader: Any) -> nn.Module:
        spec = env.spec
        torch.manual_seed(spec.seed)
        return build_retinanet(
            data_pipelines.num_classes(spec.data),
            image_size=spec.data.image_size,
            rule=spec.rule_names[0],
            last_layer=spec.rule.last_layer,
            seed=spec.seed,
            params=spec.rule.params,
        )

    def step(self, model: nn.Module, batch: Any, env: WorkerEnv):
        images, targets = to_device(env.device, batch[0], batch[1])
        with env.autocast():
            losses = detection_step(model, images, targets)
            loss = losses["classification"] + losses["bbox_regression"]
        n = float(len(images))
        with torch.no_grad():
            total = loss.detach().double() * n
            sums = {
                "loss": total,
                "train_loss": total,
                "loss_classification": losses["classification"].detach().double() * n,
                "loss_bbox_regression": losses["bbox_regression"].detach().double() * n,
            }
        return loss, sums, n

    def evaluate(self, model: nn.Module, val_loader: Any, env: WorkerEnv) -> dict[str, float]:
        return evaluate_map(model, val_loader, gather=all_gather_detections)

    def probe(self, val_loader: Any, env: WorkerEnv) -> Any:
        """The first val batch of two or more images (BatchNorm needs two), on the device."""
        return next((to_device(env.device, b[0], b[1]) for b in val_loader if len(b[0]) >= 2), None)

    def probe_alignment(self, model: nn.Module, probe: Any, env: WorkerEnv) -> dict[str, float]:
        return probe_alignment(model, probe, env.spec.tracking.alignment_mode)
