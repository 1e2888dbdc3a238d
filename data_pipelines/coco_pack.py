"""COCO detection sets as webdataset shards: each image with its boxes, in a folder or under
an ``s3://`` prefix, for object storage and for sequential reads.

Layout (:mod:`data_pipelines.pack`'s, with other members): ``{train,val}/shard-00000.tar``
(+ ``.idx``), ``annotations/<the split's annotation file>`` (the original, for evaluation
tools) and ``wds.json`` (format ``bioprop-coco-wds-1``, category names and ids, shard files,
counts, annotation files). A sample is its image's bytes (``<key>.jpg``) and
:data:`data_pipelines.coco.SHARD_MEMBERS`: the boxes as DALI's COCO reader gives them
(``ltrb=True, ratio=True``: ``[x / W, y / H, (x + w) / W, (y + h) / H]`` float32, in the
annotation file's order, boxes under 0.1 pixel dropped as its ``size_threshold`` does),
their category ids (int32, unmapped), the crowd boxes and ids apart, and the image id.
Images are in image-id order (train: seed-shuffled across shards), every listed image
kept, with or without boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.coco import index_coco, read_annotations
from data_pipelines.output import Target
from data_pipelines.pack import write_manifest, write_shards

__all__ = ["coco_members", "pack_coco", "write_coco_manifest", "write_coco_split"]

SIZE_THRESHOLD = 0.1  # pixels: DALI's COCO reader drops a box narrower or lower than this


def coco_members(doc: dict[str, Any]) -> dict[int, dict[str, bytes]]:
    """Each listed image's shard members (:data:`data_pipelines.coco.SHARD_MEMBERS`) by id."""
    images = {img["id"]: img for img in doc["images"]}
    boxes: dict[int, tuple[list, list, list, list]] = {i: ([], [], [], []) for i in images}
    for ann in doc.get("annotations", []):
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        if w < SIZE_THRESHOLD or h < SIZE_THRESHOLD:
            continue
        W, H = img["width"], img["height"]
        crowd = 2 if ann.get("iscrowd", 0) else 0
        entry = boxes[img["id"]]
        entry[crowd].append([x / W, y / H, (x + w) / W, (y + h) / H])
        entry[crowd + 1].append(ann["category_id"])

    def encode(box: list, label: list) -> tuple[bytes, bytes]:
        return (
            np.asarray(box, np.float32).reshape(-1, 4).tobytes(),
            np.asarray(label, np.int32).tobytes(),
        )

    members = {}
    for image_id, (box, label, crowd_box, crowd_label) in boxes.items():
        b, lbl = encode(box, label)
        cb, clbl = encode(crowd_box, crowd_label)
        image = np.asarray([image_id], np.int32).tobytes()
        members[image_id] = {"box": b, "lbl": lbl, "cbox": cb, "clbl": clbl, "id": image}
    return members


def write_coco_split(
    doc: dict[str, Any],
    read: Callable[[str], Callable[[], bytes]],
    target: Target,
    split: str,
    *,
    shard_size: int,
    seed: int,
    done: set[str],
    threads: int,
    progress: Callable[[int], None] | None,
) -> tuple[list[str], int]:
    """One split's shards; ``read(file_name)`` gives the reader of an image's bytes.
    Returns ``(shard names, sample count)``."""
    members = coco_members(doc)
    ordered = sorted(doc["images"], key=lambda img: img["id"])
    samples = [(read(img["file_name"]), members[img["id"]]) for img in ordered]
    shards = dict(shard_size=shard_size, seed=seed, done=done, threads=threads)
    return write_shards(samples, target, split, progress=progress, **shards), len(samples)


def write_coco_manifest(
    target: Target,
    docs: dict[str, dict[str, Any]],
    written: dict[str, tuple[list[str], int]],
    annotations: dict[str, str],
) -> None:
    """``wds.json`` of a packed COCO set (its category names in id order, and ids)."""
    categories = sorted(docs["train"]["categories"], key=lambda c: c["id"])
    write_manifest(
        target,
        [str(c.get("name", c["id"])) for c in categories],
        written,
        kind="coco",
        category_ids=[c["id"] for c in categories],
        annotations=annotations,
    )


def pack_coco(
    root: str | Path,
    out: str | Path,
    *,
    shard_size: int = 1000,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Path | str:
    """Pack a COCO folder (what the ``coco`` kind reads, checked as it checks it) into
    shards under ``out`` (a folder or an ``s3://`` prefix); resumes as
    :func:`data_pipelines.pack.write_shards` does. Returns ``out``."""
    target = Target(out)
    target.check()
    done = target.existing()
    docs, written, annotations = {}, {}, {}
    for split in ("train", "val"):
        index = index_coco(root, split)  # annotations checked, every image file present
        doc = read_annotations(index.annotations)
        docs[split] = doc
        name = f"annotations/{index.annotations.name}"
        annotations[split] = name
        if name not in done:
            target.put(name, index.annotations.read_bytes())

        def read(file_name: str, folder: Path = index.image_root) -> Callable[[], bytes]:
            return (folder / file_name).read_bytes

        shards = dict(shard_size=shard_size, seed=seed, done=done, threads=threads)
        written[split] = write_coco_split(doc, read, target, split, progress=progress, **shards)
    write_coco_manifest(target, docs, written, annotations)
    return target.dest
