"""Detection: torchvision RetinaNet on a ResNet-18 FPN backbone, trained with any feedback rule.

Xiao, Chen, Liao, Poggio 2018 train RetinaNet on COCO with sign-symmetry and feedback
alignment, the classification and box subnets' final layers optionally on exact BP. Here:

- :func:`build_retinanet`: the model (ResNet-18 with trainable BatchNorm from scratch,
  FPN on C3-C5 plus P6/P7 as torchvision's ``retinanet_resnet50_fpn``, RetinaNet heads),
  every ``nn.Conv2d`` converted to the rule; :func:`convert_retinanet` is the surgery alone
  and returns the counts.
- :func:`detection_step`: the train-mode loss dict (``classification``, ``bbox_regression``).
- :func:`predict`, :func:`coco_map`, :func:`evaluate_map`: COCO mAP with
  ``torchmetrics.detection.MeanAveragePrecision`` (pycocotools backend), mergeable over
  DDP ranks through a ``gather`` callable such as :func:`all_gather_detections`.
- :func:`probe_alignment`: rule vs exact-BP weight-gradient angles on a probe batch.

:mod:`trainers.tasks.detect` trains it with the one worker loop (:mod:`trainers.worker`).

``dfa`` cannot drive RetinaNet: it needs one output layer whose error feeds every hidden
layer directly, and RetinaNet has two heads over five pyramid levels; building with it
raises ``ValueError``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from trainers import metrics, rules
from trainers.models import build_model
from trainers.rules.base import same_shape

__all__ = [
    "BP_HEAD_LAYERS",
    "all_gather_detections",
    "build_retinanet",
    "coco_map",
    "convert_retinanet",
    "detection_step",
    "evaluate_map",
    "predict",
    "probe_alignment",
    "to_device",
]

log = logging.getLogger(__name__)

#: The subnets' final conv layers, kept on exact BP with ``last_layer="bp"`` (Xiao et al.).
BP_HEAD_LAYERS = ("head.classification_head.cls_logits", "head.regression_head.bbox_reg")

Detections = list[dict[str, Tensor]]


def convert_retinanet(
    model: nn.Module,
    rule: str,
    *,
    last_layer: str | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, int]]:
    """Convert every conv of a RetinaNet (backbone, FPN, heads) to ``rule``, in place.

    The whole model goes through :func:`trainers.rules.convert` with ``last_layer=None``
    (RetinaNet has no ``nn.Linear``, so convert's own ``last_layer`` has nothing to keep);
    with ``last_layer="bp"`` the two layers of :data:`BP_HEAD_LAYERS` are then put back as
    plain ``nn.Conv2d`` holding the same Parameters, so they run stock autograd (exact BP)
    and :func:`trainers.metrics.alignment` leaves them out. Returns ``(model, counts)``;
    counts are the layers left on ``rule``. BatchNorm layers are not touched.
    """
    if rule == "dfa":
        raise ValueError(
            "rule 'dfa' cannot train RetinaNet: direct feedback needs one output layer "
            "whose error reaches every hidden layer, and RetinaNet has two heads over five "
            "pyramid levels"
        )
    if last_layer not in (None, "bp"):
        raise ValueError(f"last_layer must be None or 'bp', got {last_layer!r}")
    model, counts = rules.convert(model, rule, last_layer=None, seed=seed, **(params or {}))
    counts = dict(counts)
    if last_layer == "bp":
        for name in BP_HEAD_LAYERS:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            layer = getattr(parent, child)
            setattr(parent, child, same_shape(layer))
            if isinstance(layer, rules.FeedbackLayer):
                counts["Conv2d"] -= 1
    return model, counts


def build_retinanet(
    num_classes: int,
    *,
    image_size: int,
    rule: str,
    last_layer: str | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> nn.Module:
    """``trainers.models``' ``retinanet_resnet18_fpn`` with every conv on ``rule``.

    Initialise the global RNG (``torch.manual_seed``) before calling for reproducible
    weights; rule feedback is seeded from ``seed``. ``last_layer="bp"``: see
    :func:`convert_retinanet`.
    """
    if rule == "dfa":  # fail before building anything
        convert_retinanet(nn.Identity(), rule)
    model = build_model("retinanet_resnet18_fpn", num_classes=num_classes, image_size=image_size)
    model, _counts = convert_retinanet(model, rule, last_layer=last_layer, seed=seed, params=params)
    return model


def _as_list(images: Tensor | list[Tensor]) -> list[Tensor]:
    return list(images.unbind(0)) if isinstance(images, Tensor) else list(images)


def detection_step(
    model: nn.Module, images: Tensor | list[Tensor], targets: Detections
) -> dict[str, Tensor]:
    """The train-mode losses of one batch: ``{"classification", "bbox_regression"}``.

    ``images``: a list of float ``[3, h, w]`` tensors (or a padded NCHW batch); ``targets``:
    ``{"boxes": float [N, 4] xyxy pixels, "labels": int64 [N]}`` per image. Inputs move to
    the model's device. The caller sums the losses and calls ``backward()``.
    """
    model.train()
    images, targets = to_device(next(model.parameters()).device, images, targets)
    losses = model(images, targets)
    return {
        "classification": losses["classification"],
        "bbox_regression": losses["bbox_regression"],
    }


def predict(model: nn.Module, batches: Iterable[Any]) -> tuple[Detections, Detections]:
    """Eval-mode detections over ``batches`` of ``(images, targets, ...)``, both on CPU.

    Returns ``(preds, targets)``: per image ``{"boxes", "scores", "labels"}`` and
    ``{"boxes", "labels"}``. Runs the unwrapped model (no DDP collective), so ranks may
    hold different numbers of images; empty batches are skipped.
    """
    net = rules.unwrap(model)
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    preds: Detections = []
    truth: Detections = []
    try:
        with torch.no_grad():
            for batch in batches:
                images, targets = _as_list(batch[0]), batch[1]
                if not images:
                    continue
                out = net([im.to(device) for im in images])
                preds += [{k: v.detach().cpu() for k, v in o.items()} for o in out]
                truth += [{k: t[k].detach().cpu() for k in ("boxes", "labels")} for t in targets]
    finally:
        net.train(was_training)
    return preds, truth


def all_gather_detections(preds: Detections, targets: Detections) -> tuple[Detections, Detections]:
    """Every rank's ``(preds, targets)`` concatenated in rank order, on every rank.

    A collective (``dist.all_gather_object``): every rank must call it. Without an
    initialised process group it returns its inputs.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return preds, targets
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (preds, targets))
    return [p for part in parts for p in part[0]], [t for part in parts for t in part[1]]


def coco_map(preds: Detections, targets: Detections) -> dict[str, float]:
    """COCO box mAP of ``preds`` against ``targets`` (torchmetrics, pycocotools backend).

    ``map`` averages AP over IoU thresholds 0.50:0.05:0.95 (101-point interpolated
    precision, up to 100 detections per image) and over the classes present in
    ``targets``; ``map_50``/``map_75`` at one threshold. -1 where COCO has nothing to score.
    pycocotools' printout goes to this module's logger at DEBUG, not to the job log.
    """
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.warn_on_many_detections = False  # keeping the top 100 by score is COCO's protocol
    metric.update(preds, targets)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints its evaluation per call
        found = metric.compute()
    log.debug("COCO evaluation:\n%s", printed.getvalue())
    return {key: float(found[key]) for key in ("map", "map_50", "map_75")}


def evaluate_map(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    gather: Callable[[Detections, Detections], tuple[Detections, Detections]] | None = None,
) -> dict[str, float]:
    """``{"map", "map_50", "map_75"}`` of ``model`` over ``batches`` (e.g. the val loader).

    DDP contract: each rank predicts its own shard; ``gather(preds, targets)`` must return
    the detections and targets of all ranks (every image once), e.g.
    :func:`all_gather_detections`, which every rank calls, so every rank gets the same
    numbers. Without ``gather`` the mAP is this rank's shard only; to merge elsewhere use
    :func:`predict` and :func:`coco_map` directly.
    """
    preds, targets = predict(model, batches)
    if gather is not None:
        preds, targets = gather(preds, targets)
    return coco_map(preds, targets)


class _LossOf(nn.Module):
    """``forward((images, targets))`` = the RetinaNet's summed train loss, for
    :func:`trainers.metrics.gradient_alignment`, which calls ``net(inputs)``. Only the
    RetinaNet's own flag is set to training (it chooses losses over detections); its
    submodules (BatchNorm) stay in the probe's declared mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: tuple[list[Tensor], Detections]) -> Tensor:
        was_training = self.net.training
        self.net.training = True
        try:
            return sum(self.net(*batch).values())
        finally:
            self.net.training = was_training


def probe_alignment(
    model: nn.Module, probe: tuple[list[Tensor], Detections], mode: str = "eval"
) -> dict[str, float]:
    """Rule vs exact-BP weight-gradient angles on the fixed probe batch, in
    ``tracking.alignment_mode`` (the same mode per step and per epoch)."""
    net = rules.unwrap(model)
    found = metrics.gradient_alignment(_LossOf(net), (probe, None), lambda loss, _: loss, mode=mode)
    out = {}
    for key, value in found.items():
        if np.isfinite(value):
            out[f"galign_{key.removeprefix('net.')}"] = value
    return out


def to_device(
    device: torch.device, images: Any, targets: Detections
) -> tuple[list[Tensor], Detections]:
    """A batch's images (as a list) and targets on ``device``."""
    images = [im.to(device, non_blocking=True) for im in _as_list(images)]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets
