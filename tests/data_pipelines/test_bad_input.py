"""Bad input, with real broken files: a clear error naming the file, or a documented result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dp_images import ID_SIZE, decode_ids, id_colour, write_id_folder
from PIL import Image

import data_pipelines as dp
from data_pipelines.check import DecodeError
from trainers.spec import DataSpec


def _folder(tmp_path: Path) -> Path:
    return write_id_folder(tmp_path / "ds", classes=2, per_class={"train": 4, "val": 3})


def _load_all(root: Path, split: str) -> list:
    data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=16))
    return [batch for batch in dp.build_loader(data, split, batch_size=4)]


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.root not found: .*nowhere"):
        dp.prepare(DataSpec(kind="imagefolder", root=tmp_path / "nowhere"))
    root = _folder(tmp_path)
    shutil.rmtree(root / "val")
    with pytest.raises(FileNotFoundError, match=f"split folder not found: {root / 'val'}"):
        dp.prepare(DataSpec(kind="imagefolder", root=root))


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "train" / "class_9_empty").mkdir()
    (root / "train" / "class_9_empty" / "readme.txt").write_text("no images")
    data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=16))
    with pytest.raises(
        ValueError, match=f"empty class folder .*{root / 'train' / 'class_9_empty'}"
    ):
        dp.build_loader(data, "train", batch_size=2)
    with pytest.raises(ValueError, match="empty class folder"):
        dp.build_loader(data, "val", batch_size=2)  # val takes its class map from train


def test_val_class_not_in_train_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    shutil.copytree(root / "val" / "class_1", root / "val" / "class_7")
    data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=16))
    with pytest.raises(ValueError, match="class folders not in train: \\['class_7'\\]"):
        dp.build_loader(data, "val", batch_size=2)


@pytest.mark.parametrize(
    "breakage",
    ["truncated", "garbage_after_jpeg_marker", "text_file"],
)
def test_undecodable_file_is_named(tmp_path: Path, breakage: str) -> None:
    root = _folder(tmp_path)
    bad = root / "val" / "class_1" / "img_001.JPEG"
    good = bad.read_bytes()
    if breakage == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif breakage == "garbage_after_jpeg_marker":
        bad.write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 40)
    else:
        bad.write_text("this is not an image")
    with pytest.raises(DecodeError, match=str(bad)) as info:
        _load_all(root, "val")
    assert info.value.paths == [bad]


@pytest.mark.parametrize("fmt", ["PNG", "CMYK"])
def test_png_or_cmyk_named_jpeg_decode_to_the_right_colour(tmp_path: Path, fmt: str) -> None:
    """Real ImageNet holds a PNG and CMYK JPEGs named .JPEG: they decode, as RGB."""
    root = _folder(tmp_path)
    path = root / "val" / "class_1" / "img_002.JPEG"
    img = Image.fromarray(np.zeros((ID_SIZE, ID_SIZE, 3), np.uint8) + np.uint8(id_colour(1, 2)))
    if fmt == "PNG":
        img.save(path, format="PNG")
    else:
        img.convert("CMYK").save(path, format="JPEG", quality=95)
    assert Image.open(path).format == ("PNG" if fmt == "PNG" else "JPEG")
    ids = [i for images, _ in _load_all(root, "val") for i in decode_ids(images)]
    assert sorted(ids) == [(c, i) for c in range(2) for i in range(3)]


def _tiny_coco(root: Path, *, annotations: list[dict], images: list[dict] | None = None) -> Path:
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        entries = images or [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 20}]
        for entry in entries:
            Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / split / entry["file_name"])
        doc = {
            "images": entries,
            "annotations": annotations,
            "categories": [{"id": 5, "name": "thing"}],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def _ann(bbox: list[float], image_id: int = 1) -> dict:
    return {"id": 11, "image_id": image_id, "category_id": 5, "bbox": bbox, "iscrowd": 0}


def test_coco_annotation_naming_missing_image(tmp_path: Path) -> None:
    root = _tiny_coco(tmp_path / "c", annotations=[_ann([1, 1, 5, 5], image_id=42)])
    with pytest.raises(ValueError, match="instances_train.json: annotation 11 names image id 42"):
        dp.prepare(DataSpec(kind="coco", root=root))


def test_coco_image_file_missing(tmp_path: Path) -> None:
    root = _tiny_coco(tmp_path / "c", annotations=[_ann([1, 1, 5, 5])])
    (root / "train" / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"missing file {root / 'train' / 'a.jpg'}"):
        dp.prepare(DataSpec(kind="coco", root=root))


@pytest.mark.parametrize("bbox", [[25, 2, 10, 5], [-5, 0, 4, 4], [2, 2, 0, 5]])
def test_coco_box_outside_image(tmp_path: Path, bbox: list[float]) -> None:
    root = _tiny_coco(tmp_path / "c", annotations=[_ann(bbox)])
    with pytest.raises(ValueError, match=f"annotation 11 box .* image {root / 'train' / 'a.jpg'}"):
        dp.prepare(DataSpec(kind="coco", root=root))


def test_coco_corrupt_image_is_named(tmp_path: Path) -> None:
    root = _tiny_coco(tmp_path / "c", annotations=[_ann([1, 1, 5, 5])])
    bad = root / "val" / "a.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    data = dp.prepare(DataSpec(kind="coco", root=root, image_size=16))
    with pytest.raises(DecodeError, match=str(bad)):
        list(dp.build_loader(data, "val", batch_size=1))


def test_folder_changes_between_epochs_are_seen(tmp_path: Path) -> None:
    """The folder index is kept between epochs (one listing per run, not per epoch), but an
    image added, removed or a class folder emptied in between shows up in the next epoch."""
    from data_pipelines.folder import index_folder

    root = _folder(tmp_path)
    first = index_folder(root / "train")
    assert len(first) == 8 and index_folder(root / "train").files == first.files
    extra = root / "train" / "class_0" / "added.jpg"
    shutil.copy(root / "train" / "class_0" / first.files[0].split("/")[1], extra)
    added = index_folder(root / "train")
    assert len(added) == 9 and "class_0/added.jpg" in added.files
    assert added.labels[added.files.index("class_0/added.jpg")] == 0
    extra.unlink()
    assert index_folder(root / "train").files == first.files
    for image in (root / "train" / "class_1").iterdir():
        image.unlink()
    with pytest.raises(ValueError, match=f"empty class folder .*{root / 'train' / 'class_1'}"):
        index_folder(root / "train")
