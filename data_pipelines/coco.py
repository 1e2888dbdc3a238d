"""COCO-format detection sets read by DALI's COCO reader, shaped for torchvision's RetinaNet.

Layout: ``root/{split}/`` (or ``root/{split}2017/``) images and
``root/annotations/instances_{split}.json`` (or ``instances_{split}2017.json``), or the same
set packed into webdataset shards (:mod:`data_pipelines.coco_pack`), in a folder or under
an ``s3://`` prefix.

The annotation file is checked in Python first (an annotation naming a missing image, an
image file that does not exist, a box outside its image or with no area: a
``ValueError`` naming the file and annotation). Category ids are mapped to contiguous
indices ``0..K-1`` in sorted id order. The pipeline decodes, flips image and boxes
together (train, p=0.5), resizes keeping the aspect ratio (shorter side =
``image_size``, longer side at most ``round(image_size * 1333 / 800)``), normalizes with
the ImageNet mean/std and pads the batch to its largest image. Each batch is
``(images, targets)``: a list of ``float32 [3, h, w]`` tensors cut to each image's
resized size and a list of ``{"boxes": float32 [M, 4] xyxy in resized-image pixels,
"labels": int64 [M]}``. Because images arrive normalized and resized, build
torchvision's RetinaNet with :func:`retinanet_transform_kwargs`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_pipelines.folder import IMAGENET_MEAN, IMAGENET_STD, reader_shard
from data_pipelines.pack import PackedIndex

__all__ = [
    "SHARD_MEMBERS",
    "CocoIndex",
    "check_annotations",
    "coco_pipeline",
    "find_split",
    "index_coco",
    "read_annotations",
    "retinanet_transform_kwargs",
]

MAX_SIZE_RATIO = 1333 / 800
BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (rounding in real annotations)


@dataclass(frozen=True)
class CocoIndex:
    """One split: image folder, annotation file, image file names, category ids (sorted)."""

    image_root: Path
    annotations: Path
    files: list[str]
    category_ids: list[int]

    def __len__(self) -> int:
        return len(self.files)


def find_split(root: Path, split: str) -> tuple[Path, Path]:
    """``(image folder, annotation file)`` of a split; error naming what is missing."""
    root = Path(root)
    folders = [root / split, root / f"{split}2017"]
    jsons = [root / "annotations" / f"instances_{split}.json"]
    jsons.append(root / "annotations" / f"instances_{split}2017.json")
    folder = next((f for f in folders if f.is_dir()), None)
    ann = next((j for j in jsons if j.is_file()), None)
    if folder is None:
        raise FileNotFoundError(f"image folder not found: {folders[0]} (or {folders[1].name})")
    if ann is None:
        raise FileNotFoundError(f"annotation file not found: {jsons[0]} (or {jsons[1].name})")
    return folder, ann


def read_annotations(ann_path: Path) -> dict[str, Any]:
    """The JSON document of an annotation file; ValueError naming it when it is not JSON."""
    try:
        return json.loads(Path(ann_path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ann_path}: not valid JSON ({exc})") from exc


def check_annotations(
    doc: dict[str, Any], ann_path: Path | str, folder: Path | str, *, include_crowd: bool = False
) -> tuple[dict[int, dict[str, Any]], list[int], set[int]]:
    """Check a COCO document: images and categories listed, each annotation naming a listed
    image and category, each box inside its image (``BOX_TOLERANCE``) with an area. Returns
    ``(images by id, sorted category ids, ids of images with a box)``; errors name
    ``ann_path`` and the annotation (``folder``: where the images are, for the message)."""
    images = {img["id"]: img for img in doc.get("images", [])}
    if not images:
        raise ValueError(f"{ann_path}: no images listed")
    categories = sorted({c["id"] for c in doc.get("categories", [])})
    if not categories:
        raise ValueError(f"{ann_path}: no categories listed")
    with_boxes: set[int] = set()
    for ann in doc.get("annotations", []):
        img = images.get(ann.get("image_id"))
        if img is None:
            raise ValueError(
                f"{ann_path}: annotation {ann.get('id')} names image id {ann.get('image_id')} "
                "that is not in 'images'"
            )
        if ann.get("category_id") not in categories:
            raise ValueError(
                f"{ann_path}: annotation {ann.get('id')} has unknown category "
                f"{ann.get('category_id')}"
            )
        x, y, w, h = ann["bbox"]
        width, height = img["width"], img["height"]
        tol = BOX_TOLERANCE
        if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise ValueError(
                f"{ann_path}: annotation {ann.get('id')} box {ann['bbox']} (xywh) lies outside "
                f"its image {folder}/{img['file_name']} ({width}x{height}) or has no area"
            )
        if include_crowd or not ann.get("iscrowd", 0):
            with_boxes.add(img["id"])
    return images, categories, with_boxes


def index_coco(
    root: str | Path, split: str, *, include_crowd: bool = False, skip_empty: bool = False
) -> CocoIndex:
    """Check a split's annotations against its images; list the images to read."""
    folder, ann_path = find_split(Path(root), split)
    doc = read_annotations(ann_path)
    images, categories, with_boxes = check_annotations(
        doc, ann_path, folder, include_crowd=include_crowd
    )
    files = []
    for image_id in sorted(images):
        img = images[image_id]
        if skip_empty and image_id not in with_boxes:
            continue
        if not (folder / img["file_name"]).is_file():
            raise FileNotFoundError(
                f"{ann_path}: image {image_id} names a missing file {folder / img['file_name']}"
            )
        files.append(img["file_name"])
    if not files:
        raise ValueError(f"{ann_path}: no images left to read")
    return CocoIndex(image_root=folder, annotations=ann_path, files=files, category_ids=categories)


def retinanet_transform_kwargs(image_size: int) -> dict[str, Any]:
    """Keyword arguments for torchvision's ``RetinaNet`` so it neither re-normalizes nor
    re-resizes the images this loader already prepared."""
    return {
        "min_size": image_size,
        "max_size": round(image_size * MAX_SIZE_RATIO),
        "image_mean": [0.0, 0.0, 0.0],
        "image_std": [1.0, 1.0, 1.0],
    }


def coco_pipeline(
    index: CocoIndex | PackedIndex,
    *,
    train: bool,
    image_size: int,
    batch_size: int,
    shard_id: int,
    num_shards: int,
    seed: int,
    num_threads: int,
    device_id: int | None,
    include_crowd: bool = False,
):
    """The DALI detection pipeline (one ``@pipeline_def``) for one split and shard.

    ``index`` is a COCO folder (DALI's COCO reader, over the images the index lists, train
    shuffled by ``seed``) or packed shards (DALI's webdataset reader,
    :mod:`data_pipelines.coco_pack`): both give each image's bytes, its boxes (ltrb, as
    fractions of the image), its category ids and its image id, and the rest is the same.
    """
    from nvidia.dali import fn, pipeline_def, types

    gpu = device_id is not None
    shard = dict(train=train, shard_id=shard_id, num_shards=num_shards, seed=seed)

    @pipeline_def(enable_conditionals=False)
    def coco_pipe():
        if isinstance(index, CocoIndex):
            files = list(index.files)
            if train:
                random.Random(seed).shuffle(files)
            jpegs, boxes, labels, ids = fn.readers.coco(
                file_root=str(index.image_root),
                annotations_file=str(index.annotations),
                images=files,
                ltrb=True,
                ratio=True,
                avoid_class_remapping=True,
                include_iscrowd=include_crowd,
                image_ids=True,
                **reader_shard(**shard),
            )
        else:
            jpegs, boxes, labels, ids = _read_shards(
                index, include_crowd=include_crowd, **reader_shard(**shard, samples=len(index))
            )
        images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
        if train:
            flip = fn.random.coin_flip(probability=0.5)
            images = fn.flip(images, horizontal=flip)
            boxes = fn.bb_flip(boxes, ltrb=True, horizontal=flip)
        images = fn.resize(
            images, resize_shorter=image_size, max_size=round(image_size * MAX_SIZE_RATIO)
        )
        sizes = images.shape(dtype=types.INT32)  # (h, w, c) after resize
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            mean=[255 * m for m in IMAGENET_MEAN],
            std=[255 * s for s in IMAGENET_STD],
        )
        images = fn.pad(images, axes=(1, 2), fill_value=0.0)
        boxes = fn.pad(boxes, axes=(0,), fill_value=-1.0)
        labels = fn.pad(labels, axes=(0,), fill_value=-1)
        if gpu:
            boxes, labels, sizes, ids = boxes.gpu(), labels.gpu(), sizes.gpu(), ids.gpu()
        return images, boxes, labels, sizes, ids

    return coco_pipe(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed * 1009 + shard_id + 1,
        prefetch_queue_depth=2,
    )


OUTPUT_MAP = ["images", "boxes", "labels", "sizes", "ids"]
#: members of a packed COCO sample besides ``jpg`` (:mod:`data_pipelines.coco_pack`):
#: non-crowd boxes (float32 ltrb fractions, 4 per box), their category ids (int32), the same
#: two for crowd boxes, the image id (int32)
SHARD_MEMBERS = ("box", "lbl", "cbox", "clbl", "id")


def _read_shards(index: PackedIndex, *, include_crowd: bool, **shard: Any):
    """DALI's webdataset reader over packed COCO shards: ``(jpegs, boxes [M, 4] ltrb
    fractions, category ids [M], image id [1])``, crowd boxes appended when asked for."""
    from nvidia.dali import fn, types

    jpegs, boxes, labels, crowd_boxes, crowd_labels, ids = fn.readers.webdataset(
        paths=[str(p) for p in index.tars],
        index_paths=[str(p) for p in index.indexes],
        ext=["jpg", *SHARD_MEMBERS],
        dtypes=[types.UINT8, types.FLOAT, types.INT32, types.FLOAT, types.INT32, types.INT32],
        missing_component_behavior="error",
        **shard,
    )
    boxes = fn.reshape(boxes, shape=[-1, 4])
    if include_crowd:
        boxes = fn.cat(boxes, fn.reshape(crowd_boxes, shape=[-1, 4]), axis=0)
        labels = fn.cat(labels, crowd_labels, axis=0)
    return jpegs, boxes, labels, ids


class DetectionBatch:
    """Turns DALI's padded batch dict into ``(list of images, list of targets)``."""

    def __init__(self, category_ids: list[int], *, with_ids: bool = False) -> None:
        lookup = torch.full((max(category_ids) + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(category_ids)] = torch.arange(len(category_ids))
        self.lookup = lookup
        self.with_ids = with_ids

    def __call__(self, batch: dict[str, torch.Tensor]):
        images, targets = [], []
        sizes = batch["sizes"].cpu()
        for i in range(batch["images"].shape[0]):
            h, w = int(sizes[i][0]), int(sizes[i][1])
            labels = batch["labels"][i].reshape(-1).long()
            keep = labels >= 0
            boxes = batch["boxes"][i].reshape(-1, 4)[keep].float()
            scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
            images.append(batch["images"][i, :, :h, :w])
            targets.append(
                {"boxes": boxes * scale, "labels": self.lookup.to(labels.device)[labels[keep]]}
            )
        if self.with_ids:
            return images, targets, batch["ids"].reshape(-1).long().tolist()
        return images, targets
