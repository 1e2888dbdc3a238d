"""``mixed`` (GPU) decoding: the same contract with CUDA tensors. Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dp_images import decode_ids

import data_pipelines as dp
from trainers.spec import DataSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_mixed_classify_labels_and_cover(id_folder: Path) -> None:
    data = dp.prepare(DataSpec(kind="imagefolder", root=id_folder, image_size=16))
    every = []
    for rank in range(2):
        for images, labels in dp.build_loader(
            data, "val", batch_size=4, shard_id=rank, num_shards=2
        ):
            assert images.is_cuda and images.dtype == torch.float32
            ids = decode_ids(images.cpu())
            assert [c for c, _ in ids] == labels.cpu().tolist()
            every += ids
    assert sorted(every) == [(c, i) for c in range(3) for i in range(7)]
    train = dp.build_loader(data, "train", batch_size=4)
    assert sum(1 for _ in train) == len(train) == 33 // 4


def test_mixed_coco(tmp_path: Path) -> None:
    root = dp.synth_coco(tmp_path / "coco", images=6, size=32, val_images=3)
    data = dp.prepare(DataSpec(kind="coco", root=root, image_size=24))
    images, targets = next(iter(dp.build_loader(data, "train", batch_size=2)))
    assert all(i.is_cuda and i.shape[1] == 24 for i in images)
    assert all(t["boxes"].shape[1] == 4 and t["labels"].dtype == torch.int64 for t in targets)


def test_mixed_none_and_cifar_augmentation(tmp_path: Path) -> None:
    """The GPU pipeline applies ``data.augment`` as the CPU one (tests/test_augment.py)."""
    from augment_checks import SIZE, cifar_candidates, match, originals, raw, write_noise_folder

    root = write_noise_folder(tmp_path / "noise")
    images = originals(root)
    for augment, candidates in (
        ("none", lambda img: [(0, 0, False, img)]),
        ("cifar", cifar_candidates),
    ):
        data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=SIZE, augment=augment))
        seen = set()
        for batch, _ in dp.build_loader(data, "train", batch_size=4, seed=3):
            assert batch.is_cuda
            for sample in raw(batch):
                found = match(sample, images, candidates)
                assert found is not None, augment
                seen.add(found[1:])
        if augment == "cifar":
            assert len(seen) > 2
