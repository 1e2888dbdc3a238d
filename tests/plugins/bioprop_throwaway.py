"""A throwaway plugin (``BIOPROP_PLUGINS=bioprop_throwaway``): one rule, one model, one task
and one data kind, each added the way docs/architecture.md says a new one is, and in this
file alone. ``tests/plugins/test_plugins.py`` trains it through ``bioprop run``.

- rule ``scaled``: ``B = factor * W`` (exact backprop directions at a scaled magnitude);
- model ``twolayer``: Linear-ReLU-Linear on flattened pixels;
- task ``errclass``: classification judged by its own headline, ``val_err`` (lower wins);
- data kind ``blobs``: Gaussian blobs, one per class, drawn in memory from the seed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from data_pipelines import register_kind
from data_pipelines.catalogue import KindInfo, add_kind
from data_pipelines.kinds import DataKind
from trainers.catalogue import (
    ModelEntry,
    Param,
    RuleEntry,
    TaskEntry,
    add_model,
    add_rule,
    add_task,
)
from trainers.models import register_model
from trainers.rules import register_rule
from trainers.rules.base import FeedbackLayer
from trainers.tasks import register_task
from trainers.tasks.base import WorkerEnv, all_reduce_sum
from trainers.tasks.classify import Classify

CLASSES, TRAIN, VAL = 3, 96, 48

# 1. the descriptors -------------------------------------------------------------------
add_task(
    "errclass",
    TaskEntry(
        headline="val_err",
        mode="min",
        title="validation error",
        label="val error",
        metrics=("val_err", "train_loss"),
        summary=("val_err",),
        curves=(("train_loss",), ("val_err",)),
    ),
)
add_rule("scaled", RuleEntry("a test's rule", {"factor": Param(0.5, (float,), "B = factor W")}))
add_model(
    "twolayer",
    ModelEntry("errclass", "a test's model", {"hidden": Param(16, (int,), "hidden units")}),
)
add_kind("blobs", KindInfo(False, ("none",), "none", ("errclass",)))


# 2. the implementations ---------------------------------------------------------------
@register_rule("scaled")
class Scaled(FeedbackLayer):
    defaults = {"factor": 0.5}

    def init_feedback(self, generator: torch.Generator, factor: float) -> None:
        self.factor = float(factor)

    def backward_weight(self) -> Tensor:
        return self.factor * self.weight.detach()


@register_model("twolayer", task="errclass")
def twolayer(*, num_classes: int, image_size: int, in_channels: int = 3, hidden: int = 16):
    flat = in_channels * image_size * image_size
    return nn.Sequential(
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


class BlobLoader:
    """``(images [B, 3, S, S], labels [B])``: class c's images are noise around a mean
    pattern of class c; shard ``i`` of ``n`` holds every n-th sample."""

    def __init__(self, split: str, size: int, batch: int, shard: int, shards: int, seed: int):
        g = torch.Generator().manual_seed(0)
        means = torch.randn(CLASSES, 3, size, size, generator=g)
        count = TRAIN if split == "train" else VAL
        g.manual_seed(1 if split == "train" else 2)
        labels = torch.arange(count) % CLASSES
        images = means[labels] + 0.8 * torch.randn(count, 3, size, size, generator=g)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        keep = order[shard::shards]
        self.images, self.labels, self.batch = images[keep], labels[keep], batch
        self.train = split == "train"

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch if self.train else math.ceil(n / self.batch)

    def __iter__(self):
        for i in range(len(self)):
            part = slice(i * self.batch, (i + 1) * self.batch)
            yield self.images[part], self.labels[part]


@register_kind("blobs")
class Blobs(DataKind):
    def loader(self, data, split, *, batch_size, shard_id, num_shards, seed, **options):
        return BlobLoader(split, data.image_size, batch_size, shard_id, num_shards, seed)

    def num_classes(self, data: Any) -> int:
        return CLASSES

    def split_size(self, data: Any, split: str) -> int:
        return TRAIN if split == "train" else VAL


@register_task("errclass")
class ErrClass(Classify):
    """Classification reported as an error rate: ``val_err = 1 - accuracy``."""

    sums = ("train_loss",)
    channels_last = False

    def step(self, model: nn.Module, batch: Any, env: WorkerEnv):
        loss, sums, n = super().step(model, batch, env)
        return loss, {"train_loss": sums["train_loss"]}, n

    def evaluate(self, model: nn.Module, val_loader: Any, env: WorkerEnv) -> dict[str, float]:
        model.eval()
        wrong = count = 0.0
        with torch.no_grad():
            for images, labels in val_loader:
                logits = model(images.to(env.device))
                wrong += float((logits.argmax(1) != labels.to(env.device)).sum())
                count += labels.numel()
        wrong, count = all_reduce_sum([wrong, count], env.device)
        return {"val_err": wrong / max(count, 1.0)}
