"""Classification: cross-entropy on class logits; ``train_loss``, ``train_acc`` per epoch and
``val_loss``, ``val_acc``, ``val_top5`` over the val split (all ranks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import data_pipelines
from trainers import metrics, rules
from trainers.models import build_model
from trainers.spec import ExperimentSpec
from trainers.tasks._registry import register_task
from trainers.tasks.base import Task, WorkerEnv, all_reduce_sum

__all__ = ["Classify", "build_classifier"]


def build_classifier(spec: ExperimentSpec, num_classes: int, in_channels: int) -> nn.Module:
    """The spec's model with its layers converted to the spec's (single) rule."""
    torch.manual_seed(spec.seed)
    model = build_model(
        spec.model,
        num_classes=num_classes,
        image_size=spec.data.image_size,
        in_channels=in_channels,
        **spec.model_params,
    )
    model, _counts = rules.convert(
        model, spec.rule.name, last_layer=spec.rule.last_layer, seed=spec.seed, **spec.rule.params
    )
    return model


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).sum())


@register_task("classify")
class Classify(Task):
    sums = ("train_loss", "train_acc")
    channels_last = True

    def build(self, env: WorkerEnv, val_loader: Any) -> nn.Module:
        in_channels = next(iter(val_loader))[0].shape[1]
        return build_classifier(env.spec, data_pipelines.num_classes(env.spec.data), in_channels)

    def step(self, model: nn.Module, batch: Any, env: WorkerEnv):
        images, labels = batch[0].to(env.device), batch[1].to(env.device)
        if env.use_amp:
            images = images.to(memory_format=torch.channels_last)
        with env.autocast():
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
        with torch.no_grad():
            n = labels.numel()
            correct = (logits.argmax(1) == labels).sum().double()
        return loss, {"train_loss": loss.detach().double() * n, "train_acc": correct}, float(n)

    def evaluate(self, model: nn.Module, val_loader: Any, env: WorkerEnv) -> dict[str, float]:
        model.eval()
        loss_sum = correct1 = correct5 = count = 0.0
        with torch.no_grad():
            for images, labels in val_loader:
                images, labels = images.to(env.device), labels.to(env.device)
                logits = model(images)
                loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
                correct1 += _topk_correct(logits, labels, 1)
                correct5 += _topk_correct(logits, labels, 5)
                count += labels.numel()
        loss_sum, correct1, correct5, count = all_reduce_sum(
            [loss_sum, correct1, correct5, count], env.device
        )
        count = max(count, 1.0)
        return {
            "val_loss": loss_sum / count,
            "val_acc": correct1 / count,
            "val_top5": correct5 / count,
        }

    def probe(self, val_loader: Any, env: WorkerEnv) -> Any:
        return next(iter(val_loader))

    def probe_alignment(self, model: nn.Module, probe: Any, env: WorkerEnv) -> dict[str, float]:
        batch = (probe[0].to(env.device), probe[1].to(env.device))
        found = metrics.gradient_alignment(
            model, batch, nn.functional.cross_entropy, mode=env.spec.tracking.alignment_mode
        )
        return {f"galign_{k}": v for k, v in found.items() if np.isfinite(v)}
