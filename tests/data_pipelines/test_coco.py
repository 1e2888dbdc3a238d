"""COCO detection loader: box arithmetic by hand, labels, crowd/empty options, shards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data_pipelines as dp
from data_pipelines.coco import retinanet_transform_kwargs
from data_pipelines.folder import IMAGENET_MEAN, IMAGENET_STD
from trainers.spec import DataSpec, SynthSpec

RED = (230, 20, 20)


def _hand_set(root: Path, *, extra_anns: list[dict] = (), extra_images: list[dict] = ()) -> Path:
    """One 60x40 image with a red 20x10 box at (10, 5), category id 9 (the 2nd of 3, 9, 12)."""
    (root / "annotations").mkdir(parents=True)
    img = np.full((40, 60, 3), 90, np.uint8)
    img[5:15, 10:30] = RED
    images = [{"id": 1, "file_name": "one.jpg", "width": 60, "height": 40}, *extra_images]
    anns = [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [10, 5, 20, 10], "iscrowd": 0}]
    anns += list(extra_anns)
    cats = [{"id": i, "name": f"cat{i}"} for i in (3, 9, 12)]
    for split in ("train", "val"):
        (root / split).mkdir()
        for entry in images:
            Image.fromarray(img).save(root / split / entry["file_name"], quality=98)
        doc = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def _red_fraction(image: torch.Tensor, box: torch.Tensor) -> float:
    """Share of red pixels inside the (slightly shrunk) box of a normalized CHW image."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image * std + mean) * 255
    x0, y0, x1, y1 = (int(round(v)) for v in box.tolist())
    patch = rgb[:, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
    red = (patch[0] > 170) & (patch[1] < 90) & (patch[2] < 90)
    return float(red.float().mean())


def test_box_after_resize_by_hand(tmp_path: Path) -> None:
    data = dp.prepare(DataSpec(kind="coco", root=_hand_set(tmp_path / "c"), image_size=20))
    assert dp.num_classes(data) == 3
    (images,), (target,) = next(iter(dp.build_loader(data, "val", batch_size=1)))
    # shorter side 40 -> 20: scale 0.5, image 60x40 -> 30x20; box xywh (10,5,20,10) -> xyxy
    assert images.shape == (3, 20, 30)
    torch.testing.assert_close(target["boxes"], torch.tensor([[5.0, 2.5, 15.0, 7.5]]))
    assert target["labels"].tolist() == [1]  # id 9 is the 2nd of the sorted ids 3, 9, 12
    assert _red_fraction(images, target["boxes"][0]) > 0.9


def test_box_after_flip_by_hand(tmp_path: Path) -> None:
    data = dp.prepare(DataSpec(kind="coco", root=_hand_set(tmp_path / "c"), image_size=20))
    loader = dp.build_loader(data, "train", batch_size=1, seed=1)
    unflipped = torch.tensor([[5.0, 2.5, 15.0, 7.5]])
    flipped = torch.tensor([[30 - 15.0, 2.5, 30 - 5.0, 7.5]])  # x' = W' - x, W' = 30
    seen = set()
    for _ in range(10):
        (images,), (target,) = next(iter(loader))
        boxes = target["boxes"]
        is_flipped = torch.allclose(boxes, flipped)
        assert is_flipped or torch.allclose(boxes, unflipped)
        assert _red_fraction(images, boxes[0]) > 0.9  # the pixels moved with the box
        seen.add(is_flipped)
    assert seen == {True, False}


def test_crowd_and_empty_options(tmp_path: Path) -> None:
    crowd = {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 20, 10, 10], "iscrowd": 1}
    empty = {"id": 2, "file_name": "empty.jpg", "width": 60, "height": 40}
    root = _hand_set(tmp_path / "c", extra_anns=[crowd], extra_images=[empty])
    data = dp.prepare(DataSpec(kind="coco", root=root, image_size=20))

    def targets(**options) -> dict[int, torch.Tensor]:
        loader = dp.build_loader(data, "val", batch_size=2, with_ids=True, **options)
        return {i: t["labels"] for _, ts, ids in loader for t, i in zip(ts, ids, strict=True)}

    default = targets()
    assert default[1].tolist() == [1] and default[2].shape == (0,)  # crowd dropped, empty kept
    with_crowd = targets(include_crowd=True)
    assert sorted(with_crowd[1].tolist()) == [0, 1]
    assert set(targets(skip_empty=True)) == {1}


@pytest.fixture(scope="module")
def synth_coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dp.synth_coco(tmp_path_factory.mktemp("coco") / "set", images=12, size=32, val_images=7)


def test_synth_coco_boxes_and_labels_match_annotations(synth_coco_root: Path) -> None:
    data = dp.prepare(DataSpec(kind="coco", root=synth_coco_root, image_size=24))
    doc = json.loads((synth_coco_root / "annotations" / "instances_val.json").read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in doc["images"]}
    order = sorted(c["id"] for c in doc["categories"])
    seen = set()
    for images, targets, ids in dp.build_loader(data, "val", batch_size=3, with_ids=True):
        for image, target, image_id in zip(images, targets, ids, strict=True):
            w, h = sizes[image_id]
            new_w = round(w * 24 / min(w, h))  # shorter side (the height) -> 24
            assert image.shape[1:] == (24, new_w)
            sx, sy = new_w / w, 24 / h  # the resize maps the whole width W onto new_w pixels
            anns = [a for a in doc["annotations"] if a["image_id"] == image_id]
            want = torch.tensor(
                [
                    [x * sx, y * sy, (x + bw) * sx, (y + bh) * sy]
                    for x, y, bw, bh in (a["bbox"] for a in anns)
                ]
            )
            torch.testing.assert_close(target["boxes"], want, atol=1e-4, rtol=1e-5)
            assert target["labels"].tolist() == [order.index(a["category_id"]) for a in anns]
            seen.add(image_id)
    assert seen == set(sizes)


@pytest.mark.parametrize("num_shards", [2, 3])
def test_coco_shards_disjoint_cover_equal_steps(synth_coco_root: Path, num_shards: int) -> None:
    data = dp.prepare(DataSpec(kind="coco", root=synth_coco_root, image_size=16))
    every, steps = [], set()
    for rank in range(num_shards):
        loader = dp.build_loader(
            data, "val", batch_size=2, shard_id=rank, num_shards=num_shards, with_ids=True
        )
        n = 0
        for _, _, ids in loader:
            every += ids
            n += 1
        steps.add((n, len(loader)))
    assert steps == {(math.ceil(math.ceil(7 / num_shards) / 2),) * 2}
    assert sorted(every) == list(range(1, 8))
    train_steps = {
        len(dp.build_loader(data, "train", batch_size=2, shard_id=r, num_shards=num_shards))
        for r in range(num_shards)
    }
    assert train_steps == {(12 // num_shards) // 2}


def test_synthetic_detect_prepare_and_retinanet(workdir: Path) -> None:
    """prepare(task='detect') builds a COCO set once; a torchvision RetinaNet takes a batch."""
    from torchvision.models.detection import retinanet_resnet50_fpn

    spec = DataSpec(kind="synthetic", image_size=32, synth=SynthSpec(images=4, size=32))
    data = dp.prepare(spec, task="detect")
    assert data.kind == "coco" and data.root.name.startswith("synthetic-coco-")
    assert dp.prepare(spec, task="detect").root == data.root
    images, targets = next(iter(dp.build_loader(data, "train", batch_size=2)))
    model = retinanet_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=dp.num_classes(data),
        **retinanet_transform_kwargs(32),
    )
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
