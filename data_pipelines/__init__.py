"""bioprop data pipelines: DALI loaders for ImageNet-layout folders, digits, synthetic sets.

Contract (docs/architecture.md):

- :func:`prepare` runs once on the driver: builds the synthetic set on first use,
  checks roots, returns the data section with ``root`` filled.
- :func:`build_loader` runs on each worker over a prepared section: an iterable of
  ``(images float32 NCHW, labels int64 [N])`` with ``len()`` = steps per epoch, the same
  on every shard; each ``iter()`` is one epoch.
- :func:`num_classes` gives the class count of a prepared section.

Each is looked up by ``data.kind`` in :data:`KINDS` (:mod:`data_pipelines.kinds`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from data_pipelines.kinds import KINDS, default_device_id, get_kind, register_kind, synthetic_root
from data_pipelines.synth import synth_coco, synth_imagenet

__all__ = [
    "KINDS",
    "build_loader",
    "default_device_id",
    "num_classes",
    "split_size",
    "prepare",
    "register_kind",
    "synth_coco",
    "synth_imagenet",
    "synthetic_root",
]


def prepare(data: Any, *, task: str = "classify") -> Any:
    """Resolve a spec's ``data`` section on the driver; returns a copy with ``root`` set.

    ``synthetic`` builds its set on first use (atomically; skipped when present). With
    ``task="detect"`` it builds a COCO-format set and returns ``kind="coco"``, so workers
    need not know the task. ``coco`` sections are checked here (annotations against
    images), so a broken set fails on the driver before any worker starts.
    """
    return get_kind(data.kind).prepare(data, task=task)


def build_loader(
    data: Any,
    split: str,
    *,
    batch_size: int,
    shard_id: int = 0,
    num_shards: int = 1,
    seed: int = 0,
    **options: Any,
) -> Iterable:
    """Loader for one split (``train`` or ``val``) and one shard of a prepared data section.

    Classification: batches ``(images float32 NCHW, labels int64 [N])``. Detection
    (``coco``): ``(list of float32 [3, h, w], list of {"boxes", "labels"})``; ``options``
    ``include_crowd`` (default False: crowd boxes dropped), ``skip_empty`` (default False:
    images without boxes kept, with empty targets) and ``with_ids`` (a third item, the COCO
    image ids) apply to it.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} not in [0, {num_shards})")
    return get_kind(data.kind).loader(
        data,
        split,
        batch_size=batch_size,
        shard_id=shard_id,
        num_shards=num_shards,
        seed=seed,
        **options,
    )


def num_classes(data: Any) -> int:
    """Number of classes of a prepared data section."""
    return get_kind(data.kind).num_classes(data)


def split_size(data: Any, split: str) -> int:
    """Number of images (samples) in ``split`` of a prepared data section."""
    return get_kind(data.kind).split_size(data, split)
