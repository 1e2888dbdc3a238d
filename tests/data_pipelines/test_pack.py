"""Packed webdataset shards: the loader reads them as it reads the folder."""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import pytest
from dp_images import decode_ids

import data_pipelines as dp
from data_pipelines.check import DecodeError
from data_pipelines.pack import pack_imagefolder
from trainers.spec import DataSpec


def _spec(root: Path) -> DataSpec:
    return dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=16))


def test_pack_layout_and_index(id_folder: Path, tmp_path: Path) -> None:
    out = pack_imagefolder(id_folder, tmp_path / "packed", shard_size=8)
    tars = sorted((out / "train").glob("*.tar"))
    assert len(tars) == math.ceil(33 / 8)
    with tarfile.open(tars[0]) as tar:
        names = tar.getnames()
    assert names[:2] == [names[0].replace(".cls", ".jpg"), names[0].replace(".jpg", ".cls")]
    first_line = tars[0].with_suffix(".idx").read_text().splitlines()[0]
    assert first_line == "v1.2 8"
    assert dp.num_classes(_spec(out)) == 3


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_packed_val_labels_shards_cover(id_folder: Path, tmp_path: Path, num_shards: int) -> None:
    data = _spec(pack_imagefolder(id_folder, tmp_path / "packed", shard_size=5))
    every, steps = [], set()
    for rank in range(num_shards):
        loader = dp.build_loader(data, "val", batch_size=4, shard_id=rank, num_shards=num_shards)
        n = 0
        for images, labels in loader:
            ids = decode_ids(images)
            assert [c for c, _ in ids] == labels.tolist()
            every += ids
            n += 1
        steps.add((n, len(loader)))
    assert steps == {(math.ceil(math.ceil(21 / num_shards) / 4),) * 2}
    assert sorted(every) == [(c, i) for c in range(3) for i in range(7)]


def test_packed_train_epochs(id_folder: Path, tmp_path: Path) -> None:
    data = _spec(pack_imagefolder(id_folder, tmp_path / "packed", shard_size=7))
    loaders = [
        dp.build_loader(data, "train", batch_size=4, shard_id=r, num_shards=2) for r in (0, 1)
    ]
    for _ in range(2):
        every = []
        for loader in loaders:
            batches = list(loader)
            assert len(batches) == len(loader) == (33 // 2) // 4
            for images, labels in batches:
                ids = decode_ids(images)
                assert [c for c, _ in ids] == labels.tolist()
                every += ids
        assert len(set(every)) == len(every) == 2 * 4 * 4


def test_packed_corrupt_member_is_named(id_folder: Path, tmp_path: Path) -> None:
    bad = id_folder / "val" / "class_2" / "img_003.JPEG"
    bad.write_bytes(bad.read_bytes()[:80])
    data = _spec(pack_imagefolder(id_folder, tmp_path / "packed", shard_size=50))
    with pytest.raises(DecodeError, match=r"val/shard-00000.tar:\d+\.jpg"):
        list(dp.build_loader(data, "val", batch_size=4))
