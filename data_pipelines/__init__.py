"""bioprop data pipelines: DALI loaders for ImageNet-layout folders, digits, synthetic sets.

Contract (docs/architecture.md):

- :func:`prepare` runs once on the driver: builds the synthetic set on first use,
  checks roots, returns the data section with ``root`` filled.
- :func:`build_loader` runs on each worker over a prepared section: an iterable of
  ``(images float32 NCHW, labels int64 [N])`` with ``len()`` = steps per epoch, the same
  on every shard; each ``iter()`` is one epoch.
- :func:`num_classes` gives the class count of a prepared section.

Loaders are looked up by ``data.kind`` in :data:`LOADERS`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from data_pipelines.synth import SYNTH_VERSION, atomic_build, synth_coco, synth_imagenet

__all__ = [
    "LOADERS",
    "build_loader",
    "default_device_id",
    "num_classes",
    "prepare",
    "synth_coco",
    "synth_imagenet",
    "synthetic_root",
]

log = logging.getLogger(__name__)


def default_device_id() -> int | None:
    """The CUDA device DALI decodes on (``mixed``), or None for CPU pipelines."""
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else None


def synthetic_root(data: Any, base: str | Path | None = None, *, task: str = "classify") -> Path:
    """Default cache folder of a synthetic set: ``<base>/bioprop-runs/data/synthetic-<hash>``
    (``synthetic-coco-<hash>`` for detection); without ``base``, under ``$BIOPROP_DATA_CACHE``
    (a folder every Ray node mounts, on a cluster) when set, else the working directory."""
    s = data.synth
    if task == "detect":
        params, prefix = {"images": s.images, "size": s.size}, "synthetic-coco"
    else:
        params = {"classes": s.classes, "train": s.train_per_class, "val": s.val_per_class}
        params, prefix = {**params, "size": s.size}, "synthetic"
    params["version"] = SYNTH_VERSION
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    cache = os.environ.get("BIOPROP_DATA_CACHE", "").strip()
    if base is None and cache:
        folder = Path(cache)
    else:
        folder = Path(base or Path.cwd()) / "bioprop-runs" / "data"
    return (folder / f"{prefix}-{digest}").expanduser().absolute()


def _check_imagefolder(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"data.root not found: {root}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"split folder not found: {root / split}")


def prepare(data: Any, *, task: str = "classify") -> Any:
    """Resolve a spec's ``data`` section on the driver; returns a copy with ``root`` set.

    ``synthetic`` builds its set on first use (atomically; skipped when present). With
    ``task="detect"`` it builds a COCO-format set and returns ``kind="coco"``, so workers
    need not know the task. ``coco`` sections are checked here (annotations against
    images), so a broken set fails on the driver before any worker starts.
    """
    if data.kind == "synthetic" and task == "detect":
        root = Path(data.root).absolute() if data.root else synthetic_root(data, task=task)
        s = data.synth
        atomic_build(root, lambda tmp: synth_coco(tmp, images=s.images, size=s.size))
        return prepare(data.model_copy(update={"root": root, "kind": "coco"}))
    if data.kind == "synthetic":
        root = Path(data.root).absolute() if data.root else synthetic_root(data)
        s = data.synth
        atomic_build(
            root,
            lambda tmp: synth_imagenet(
                tmp,
                classes=s.classes,
                train_per_class=s.train_per_class,
                val_per_class=s.val_per_class,
                size=s.size,
            ),
        )
        return data.model_copy(update={"root": root})
    if data.kind == "imagefolder":
        root = Path(data.root).expanduser().absolute()
        _check_imagefolder(root)
        return data.model_copy(update={"root": root})
    if data.kind == "coco":
        from data_pipelines.coco import index_coco

        root = Path(data.root).expanduser().absolute()
        if not root.is_dir():
            raise FileNotFoundError(f"data.root not found: {root}")
        for split in ("train", "val"):
            index_coco(root, split)
        return data.model_copy(update={"root": root})
    if data.kind == "digits":
        return data.model_copy()
    raise NotImplementedError(f"data.kind {data.kind!r} is not supported yet")


def _augment(data: Any) -> str:
    """``data.augment``, or the kind's default (``DataSpec.augmentation``)."""
    augment = getattr(data, "augmentation", None) or getattr(data, "augment", None)
    return augment or ("imagenet" if data.kind in ("imagefolder", "synthetic") else "none")


def _val_resize(data: Any) -> int:
    """Shorter side before the val center crop: ImageNet's 256/224 with ``imagenet``
    augmentation, the crop itself (the whole image) with ``cifar`` and ``none``."""
    if data.val_resize:
        return data.val_resize
    if _augment(data) == "imagenet":
        return round(data.image_size * 256 / 224)
    return data.image_size


def _folder_loader(
    data: Any, split: str, *, batch_size: int, shard_id: int, num_shards: int, seed: int
) -> Iterable:
    from data_pipelines.check import explain_decode_error
    from data_pipelines.folder import classify_pipeline, index_folder, shuffled
    from data_pipelines.loader import DaliLoader, classify_batch
    from data_pipelines.pack import is_packed, iter_packed_images, read_packed

    if data.root is None:
        raise ValueError("data.root is not set: call data_pipelines.prepare(data) first")
    root = Path(data.root)
    train = split == "train"
    if is_packed(root):
        index = read_packed(root, split)
        sources = lambda: iter_packed_images(index)  # noqa: E731
    else:
        classes = index_folder(root / "train").classes if split == "val" else None
        index = index_folder(root / split, classes=classes)
        if train:
            index = shuffled(index, seed)
        sources = lambda: (index.root / f for f in index.files)  # noqa: E731
    steps = None
    if train:
        steps = (len(index) // num_shards) // batch_size
        if steps == 0:
            raise ValueError(
                f"train shard of {len(index) // num_shards} images ({root / split}) is smaller "
                f"than batch_size {batch_size}"
            )
    pipe = classify_pipeline(
        index,
        train=train,
        image_size=data.image_size,
        val_resize=_val_resize(data),
        batch_size=batch_size,
        shard_id=shard_id,
        num_shards=num_shards,
        seed=seed,
        num_threads=data.num_threads,
        device_id=default_device_id(),
        augment=_augment(data),
    )
    return DaliLoader(
        pipe,
        output_map=["images", "labels"],
        steps=steps,
        convert=classify_batch,
        on_error=lambda exc: explain_decode_error(exc, sources()),
    )


def _digits_loader(
    data: Any, split: str, *, batch_size: int, shard_id: int, num_shards: int, seed: int
) -> Iterable:
    from data_pipelines.digits import DigitsLoader

    return DigitsLoader(
        split,
        image_size=data.image_size,
        batch_size=batch_size,
        shard_id=shard_id,
        num_shards=num_shards,
        seed=seed,
    )


def _coco_loader(
    data: Any,
    split: str,
    *,
    batch_size: int,
    shard_id: int,
    num_shards: int,
    seed: int,
    include_crowd: bool = False,
    skip_empty: bool = False,
    with_ids: bool = False,
) -> Iterable:
    from data_pipelines.check import explain_decode_error
    from data_pipelines.coco import OUTPUT_MAP, DetectionBatch, coco_pipeline, index_coco
    from data_pipelines.loader import DaliLoader

    if data.root is None:
        raise ValueError("data.root is not set: call data_pipelines.prepare(data) first")
    index = index_coco(data.root, split, include_crowd=include_crowd, skip_empty=skip_empty)
    train = split == "train"
    steps = (len(index) // num_shards) // batch_size if train else None
    if steps == 0:
        raise ValueError(
            f"train shard of {len(index) // num_shards} images ({index.annotations}) is smaller "
            f"than batch_size {batch_size}"
        )
    pipe = coco_pipeline(
        index,
        train=train,
        image_size=data.image_size,
        batch_size=batch_size,
        shard_id=shard_id,
        num_shards=num_shards,
        seed=seed,
        num_threads=data.num_threads,
        device_id=default_device_id(),
        include_crowd=include_crowd,
    )
    convert = DetectionBatch(index.category_ids, with_ids=with_ids)
    paths = [index.image_root / f for f in index.files]
    return DaliLoader(
        pipe,
        output_map=OUTPUT_MAP,
        steps=steps,
        convert=convert,
        on_error=lambda exc: explain_decode_error(exc, paths),
    )


LOADERS: dict[str, Callable[..., Iterable]] = {
    "imagefolder": _folder_loader,
    "synthetic": _folder_loader,
    "digits": _digits_loader,
    "coco": _coco_loader,
}


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
    if data.kind not in LOADERS:
        raise NotImplementedError(f"data.kind {data.kind!r} has no loader yet")
    return LOADERS[data.kind](
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
    if data.kind == "digits":
        from data_pipelines.digits import NUM_CLASSES

        return NUM_CLASSES
    if data.kind in ("imagefolder", "synthetic"):
        from data_pipelines.folder import list_classes
        from data_pipelines.pack import is_packed, read_packed

        if data.root is None:
            raise ValueError("data.root is not set: call data_pipelines.prepare(data) first")
        if is_packed(data.root):
            return len(read_packed(data.root, "train").classes)
        return len(list_classes(Path(data.root) / "train"))
    if data.kind == "coco":
        from data_pipelines.coco import index_coco

        return len(index_coco(data.root, "train").category_ids)
    raise NotImplementedError(f"data.kind {data.kind!r} has no class count yet")
