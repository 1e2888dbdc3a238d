"""Loader benchmark: the DALI train pipeline against torchvision ImageFolder + DataLoader.

Both read the same JPEG files of ``root/train`` and apply the same transforms (random
resized crop to ``image_size`` with area 0.08-1 and aspect 3/4-4/3, horizontal flip,
ImageNet normalization, float NCHW batches), with the same number of CPU threads: DALI
``num_threads=threads``, torchvision ``num_workers=threads`` worker processes. Each
loader is timed over ``batches`` batches after ``warmup`` batches, in alternating
rounds; the headline is the median round of each (the machine may be shared), with
every round's rate and the best-round ratio reported too.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["bench_loader", "bench_roots", "dali_train_loader", "torchvision_train_loader"]

log = logging.getLogger(__name__)


def _cycle(loader: Iterable) -> Iterator[Any]:
    while True:
        yield from loader


def _images_per_s(loader: Iterable, *, batches: int, warmup: int) -> float:
    it = _cycle(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        images = next(it)[0]  # a tensor (classification) or a list of images (detection)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def dali_train_loader(
    root: Path | str, *, image_size: int, batch_size: int, threads: int, cache: bool = False
) -> Iterable:
    """The project's DALI train loader over ``root`` (one shard; a folder, packed shards, or
    either under ``s3://``; ``cache``: ``data.cache``), prepared (preflighted) as a run
    prepares it. A COCO root (a folder with ``annotations/``, or packed COCO shards) gets
    the detection pipeline, an ImageNet one the classification pipeline."""
    from data_pipelines import build_loader, prepare
    from data_pipelines.location import is_uri
    from data_pipelines.pack import is_packed, packed_kind
    from data_pipelines.spec import DataSpec

    if is_packed(root):
        kind = packed_kind(root)
    else:
        kind = "coco" if not is_uri(root) and (Path(root) / "annotations").is_dir() else None
    kind = kind or "imagefolder"
    data = DataSpec(kind=kind, root=root, image_size=image_size, num_threads=threads, cache=cache)
    task = "detect" if kind == "coco" else "classify"
    return build_loader(prepare(data, task=task), "train", batch_size=batch_size)


def torchvision_train_loader(
    root: Path, *, image_size: int, batch_size: int, threads: int
) -> Iterable:
    """torchvision's ImageFolder + DataLoader with the same transforms."""
    from torchvision import datasets, transforms

    from data_pipelines.folder import IMAGENET_MEAN, IMAGENET_STD

    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(str(Path(root) / "train"), transform=tf)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=threads,
        drop_last=True,
        persistent_workers=threads > 0,
    )


def bench_loader(
    root: str | Path,
    *,
    image_size: int = 224,
    batch_size: int = 64,
    threads: int = 2,
    batches: int = 20,
    warmup: int = 3,
    rounds: int = 2,
) -> dict[str, Any]:
    """Images/s of both loaders on ``root/train``; returns the numbers and settings."""
    from data_pipelines import default_device_id

    root = Path(root)
    kw = {"image_size": image_size, "batch_size": batch_size, "threads": threads}
    dali = dali_train_loader(root, **kw)
    tv = torchvision_train_loader(root, **kw)
    rates: dict[str, list[float]] = {"dali": [], "torchvision": []}
    for r in range(rounds):
        for name, loader in (("dali", dali), ("torchvision", tv)):
            rate = _images_per_s(loader, batches=batches, warmup=warmup)
            log.info("round %d %s: %.1f images/s", r, name, rate)
            rates[name].append(round(rate, 1))
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    device_id = default_device_id()
    return {
        "dali_images_per_s": round(median["dali"], 1),
        "torchvision_images_per_s": round(median["torchvision"], 1),
        "speedup": round(median["dali"] / median["torchvision"], 2),
        "speedup_best_rounds": round(best["dali"] / best["torchvision"], 2),
        "dali_rounds": rates["dali"],
        "torchvision_rounds": rates["torchvision"],
        "dali_decoding": "mixed" if device_id is not None else "cpu",
        "threads": threads,
        "batch_size": batch_size,
        "image_size": image_size,
        "batches": batches,
        "rounds": rounds,
        "train_images": sum(1 for p in (root / "train").rglob("*") if p.is_file()),
        "root": str(root),
    }


def bench_roots(
    roots: list[str | Path],
    *,
    image_size: int = 224,
    batch_size: int = 64,
    threads: int = 2,
    batches: int = 20,
    warmup: int = 3,
    rounds: int = 2,
    cached: list[str] = (),
) -> dict[str, Any]:
    """Images/s of the same DALI train pipeline over each root (e.g. the same images as local
    shards, shards in a bucket, a local folder, many small objects in a bucket), timed in
    alternating rounds; the headline is each root's median round. ``cached``: packed roots
    on object storage read with ``data.cache`` (named ``<uri> (cached)``); the copy into the
    cache happens when the loader is built, before the rounds, and is timed apart
    (``cache_copy_s``)."""
    from data_pipelines import default_device_id

    kw = {"image_size": image_size, "batch_size": batch_size, "threads": threads}
    loaders = {str(root): dali_train_loader(root, **kw) for root in roots}
    copy_s = {}
    for uri in cached:
        start = time.perf_counter()
        loaders[f"{uri} (cached)"] = dali_train_loader(uri, cache=True, **kw)
        copy_s[f"{uri} (cached)"] = round(time.perf_counter() - start, 2)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(rounds):
        for name, loader in loaders.items():
            rate = _images_per_s(loader, batches=batches, warmup=warmup)
            log.info("round %d %s: %.1f images/s", r, name, rate)
            rates[name].append(round(rate, 1))
    return {
        "images_per_s": {name: round(statistics.median(v), 1) for name, v in rates.items()},
        "cache_copy_s": copy_s,
        "rounds": rates,
        "dali_decoding": "mixed" if default_device_id() is not None else "cpu",
        "threads": threads,
        "batch_size": batch_size,
        "image_size": image_size,
        "batches": batches,
    }
