"""ImageNet-layout folders (``root/{train,val}/<class>/*``) read by a DALI pipeline.

Class index = position of the folder name in sorted order, as torchvision's
``ImageFolder``. The file list is built here (not by DALI's directory walk) so that
labels, empty classes and the shuffle order are under our control; the train list is
shuffled once with the seed, then DALI shards it into ``num_shards`` contiguous slices.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import data_pipelines.objstore as objstore
from data_pipelines.location import is_uri, join_uri

if TYPE_CHECKING:
    from data_pipelines.pack import PackedIndex

__all__ = [
    "AUGMENTS",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FolderIndex",
    "classify_pipeline",
    "index_folder",
    "index_sources",
    "index_split",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTS = ("imagenet", "cifar", "none")
CIFAR_PAD = 4  # pixels of zero padding before the random crop (He et al. 2016's CIFAR recipe)


@dataclass(frozen=True)
class FolderIndex:
    """Files of one split with their labels; ``files`` are relative to ``root`` (a folder,
    or an ``s3://`` prefix DALI's file reader opens itself)."""

    root: Path | str
    classes: list[str]
    files: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)


def list_classes(split_root: Path) -> list[str]:
    """Sorted class folder names under ``split_root`` (error naming the path if none)."""
    if not split_root.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_root}")
    classes = sorted(p.name for p in split_root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"no class folders in {split_root}")
    return classes


_INDEX_CACHE: dict[tuple[str, tuple[str, ...]], tuple[tuple[int, ...], FolderIndex]] = {}
_INDEX_CACHE_SIZE = 4  # a run's train and val splits, with room to spare


def _folder_stamp(split_root: Path, classes: list[str]) -> tuple[int, ...]:
    """Modification times (ns) of the split folder and its class folders (-1: missing).

    A directory's mtime changes when an entry is added, removed or renamed in it, so an
    unchanged stamp means an unchanged file list: K + 1 stats instead of one per image.
    """
    stamp = []
    for folder in (split_root, *(split_root / name for name in classes)):
        try:
            stamp.append(folder.stat().st_mtime_ns)
        except FileNotFoundError:
            stamp.append(-1)
    return tuple(stamp)


def _image_names(folder: Path) -> list[str]:
    """Sorted image file names in ``folder``; ``scandir`` reads the file type from the
    directory entry, so no stat per file (1.28 M of them per ImageNet epoch)."""
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file()
        )


def index_folder(split_root: str | Path, *, classes: list[str] | None = None) -> FolderIndex:
    """Index ``split_root/<class>/<image>``; refuses empty class folders by name.

    ``classes`` (e.g. the train split's) fixes the class -> index map; a val class folder
    not among them is an error rather than a silently shifted label. The index is kept per
    process while no folder's modification time changes (trainers rebuild their loader every
    epoch; listing ImageNet's train split costs seconds, more on network file systems).
    """
    split_root = Path(split_root)
    found = list_classes(split_root)
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{split_root} has class folders not in train: {unknown[:5]}")
    key = (str(split_root.absolute()), tuple(classes))
    stamp = _folder_stamp(split_root, classes)
    hit = _INDEX_CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = split_root / name
        if not folder.is_dir():
            continue  # a class with no val images is allowed
        names = _image_names(folder)
        if not names:
            raise ValueError(f"empty class folder (no image files): {folder}")
        files.extend(f"{name}/{n}" for n in names)
        labels.extend([label] * len(names))
    index = FolderIndex(root=split_root, classes=classes, files=files, labels=labels)
    while len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
        del _INDEX_CACHE[next(iter(_INDEX_CACHE))]
    _INDEX_CACHE[key] = (stamp, index)
    return index


_URI_INDEX: dict[str, dict[str, int]] = {}


def index_split(root: str | Path, split: str, *, classes: list[str] | None = None) -> FolderIndex:
    """:func:`index_folder` of ``root/split``, ``root`` a folder or an ``s3://`` prefix
    (listed once per process: ``<class>/<image>`` objects, the same rules as a folder)."""
    if not is_uri(root):
        return index_folder(Path(root) / split, classes=classes)
    uri = join_uri(str(root), split)
    if uri not in _URI_INDEX:
        _URI_INDEX[uri] = objstore.list_files(uri)
    by_class: dict[str, list[str]] = {}
    for key in _URI_INDEX[uri]:
        parts = key.split("/")
        if len(parts) == 2 and os.path.splitext(parts[1])[1].lower() in IMAGE_EXTENSIONS:
            by_class.setdefault(parts[0], []).append(parts[1])
    if not by_class:
        raise FileNotFoundError(f"no class folders with images under {uri}")
    if classes is None:
        classes = sorted(by_class)
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        raise ValueError(f"{uri} has class folders not in train: {unknown[:5]}")
    files, labels = [], []
    for label, name in enumerate(classes):
        names = sorted(by_class.get(name, []))
        files.extend(f"{name}/{n}" for n in names)
        labels.extend([label] * len(names))
    return FolderIndex(root=uri, classes=classes, files=files, labels=labels)


def index_sources(index: FolderIndex) -> Iterator[Path | tuple[str, bytes]]:
    """Each file of an index to decode-check: a path, or ``(uri, bytes)`` on object storage."""
    for f in index.files:
        if isinstance(index.root, str):
            uri = join_uri(index.root, f)
            yield uri, objstore.read_bytes(uri)
        else:
            yield index.root / f


def shuffled(index: FolderIndex, seed: int) -> FolderIndex:
    """The index in a seed-determined order (same on every rank)."""
    order = list(range(len(index)))
    random.Random(seed).shuffle(order)
    return FolderIndex(
        root=index.root,
        classes=index.classes,
        files=[index.files[i] for i in order],
        labels=[index.labels[i] for i in order],
    )


def reader_shard(
    *, train: bool, shard_id: int, num_shards: int, seed: int, samples: int | None = None
) -> dict:
    """A DALI reader's sharding arguments, the same for every reader here: named ``Reader``
    (the loaders size epochs by it), train shuffled and moving across shards each epoch,
    val in a fixed shard with the last batch padded, so every rank steps equally often.
    The train shuffle buffer (``initial_fill``, DALI's default 1024) is cut to the shard's
    ``samples`` when smaller: a larger buffer only re-reads the shard before the first batch
    (on object storage, one request per sample each time)."""
    fill = {}
    if train and samples is not None:
        fill["initial_fill"] = max(1, min(1024, -(-samples // num_shards)))
    return dict(
        **fill,
        random_shuffle=train,
        shard_id=shard_id,
        num_shards=num_shards,
        stick_to_shard=not train,
        pad_last_batch=True,
        name="Reader",
        seed=seed,
    )


def classify_pipeline(
    index: FolderIndex | PackedIndex,
    *,
    train: bool,
    image_size: int,
    val_resize: int,
    batch_size: int,
    shard_id: int,
    num_shards: int,
    seed: int,
    num_threads: int,
    device_id: int | None,
    augment: str = "imagenet",
):
    """Build the DALI pipeline (one ``@pipeline_def``) for one split and shard.

    ``index`` is a folder's file list (read by ``readers.file``) or packed tar shards
    (read by ``readers.webdataset``); everything after the reader is the same, on CPU
    (``device_id=None``) and GPU (``mixed`` decoding) alike. ``augment`` (train split only):
    ``imagenet`` (random-resized crop, area 8-100 %, aspect 3/4-4/3, plus a flip),
    ``cifar`` (the val transform, then 4 pixels of zero padding, a random ``image_size``
    crop and a flip) or ``none`` (the val transform). Val: shorter side resized to
    ``val_resize``, center crop ``image_size``.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"data.augment must be one of {AUGMENTS}, got {augment!r}")
    from nvidia.dali import fn, pipeline_def, types

    gpu = device_id is not None
    mean = [255 * m for m in IMAGENET_MEAN]
    std = [255 * s for s in IMAGENET_STD]

    @pipeline_def(enable_conditionals=False)
    def imagenet_pipe():
        shard = reader_shard(
            train=train, shard_id=shard_id, num_shards=num_shards, seed=seed, samples=len(index)
        )
        if isinstance(index, FolderIndex):
            jpegs, labels = fn.readers.file(
                file_root=str(index.root), files=index.files, labels=index.labels, **shard
            )
        else:  # packed webdataset shards (data_pipelines.pack)
            jpegs, labels = fn.readers.webdataset(
                paths=[str(p) for p in index.tars],
                index_paths=[str(p) for p in index.indexes],
                ext=["jpg", "cls"],
                dtypes=[types.UINT8, types.INT64],
                missing_component_behavior="error",
                **shard,
            )
        decode_device = "mixed" if gpu else "cpu"
        crop_pos: dict = {}
        if train and augment == "imagenet":
            # ROI decoding of a random-resized crop (area 0.08-1, aspect 3/4-4/3), as DALI's
            # ResNet-50 example: same distribution as random_resized_crop, less decoding work.
            images = fn.decoders.image_random_crop(
                jpegs, device=decode_device, output_type=types.RGB, num_attempts=10
            )
            images = fn.resize(images, resize_x=image_size, resize_y=image_size)
            mirror = fn.random.coin_flip(probability=0.5)
        else:  # the val transform: shorter side to val_resize, then a center crop
            images = fn.decoders.image(jpegs, device=decode_device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=val_resize)
            mirror = False
            if train and augment == "cifar":
                # pad 4 pixels of zeros on every side (a centered window 8 pixels larger than
                # the image), then a random image_size window of it and a horizontal flip
                padded = image_size + 2 * CIFAR_PAD
                images = fn.crop(
                    images,
                    crop=(padded, padded),
                    out_of_bounds_policy="pad",
                    fill_values=0,
                )
                crop_pos = {
                    "crop_pos_x": fn.random.uniform(range=(0.0, 1.0)),
                    "crop_pos_y": fn.random.uniform(range=(0.0, 1.0)),
                }
                mirror = fn.random.coin_flip(probability=0.5)
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            crop=(image_size, image_size),
            mean=mean,
            std=std,
            mirror=mirror,
            **crop_pos,
        )
        if gpu:
            labels = labels.gpu()
        return images, labels

    return imagenet_pipe(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed * 1009 + shard_id + 1,
        prefetch_queue_depth=2,
    )
