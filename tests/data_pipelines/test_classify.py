"""Classification loaders: labels, sharding, step counts, determinism, prepare()."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from dp_images import decode_ids

import data_pipelines as dp
from trainers.spec import DataSpec, SynthSpec


def _folder_spec(root: Path, **kw) -> DataSpec:
    return dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=16, **kw))


def _epoch(loader) -> tuple[list[tuple[int, int]], list[int], int]:
    ids, labels, steps = [], [], 0
    for images, y in loader:
        assert images.dtype == torch.float32 and images.dim() == 4 and images.shape[1] == 3
        assert y.dtype == torch.int64 and y.shape == (images.shape[0],)
        ids += decode_ids(images)
        labels += y.tolist()
        steps += 1
    return ids, labels, steps


@pytest.mark.parametrize("split", ["train", "val"])
def test_labels_match_class_folders(id_folder: Path, split: str) -> None:
    data = _folder_spec(id_folder)
    assert dp.num_classes(data) == 3
    ids, labels, _ = _epoch(dp.build_loader(data, split, batch_size=4))
    assert ids and all(c == label for (c, _), label in zip(ids, labels, strict=True))


@pytest.mark.parametrize("num_shards", [1, 2, 3, 4])
def test_val_shards_disjoint_cover_equal_steps(id_folder: Path, num_shards: int) -> None:
    data = _folder_spec(id_folder)
    every, steps = [], set()
    for rank in range(num_shards):
        loader = dp.build_loader(data, "val", batch_size=4, shard_id=rank, num_shards=num_shards)
        ids, _, n = _epoch(loader)
        assert n == len(loader)
        steps.add(n)
        every += ids
    assert steps == {math.ceil(math.ceil(21 / num_shards) / 4)}
    assert sorted(every) == [(c, i) for c in range(3) for i in range(7)]  # each exactly once


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_train_shards_disjoint_equal_steps_each_epoch(id_folder: Path, num_shards: int) -> None:
    data = _folder_spec(id_folder)
    loaders = [
        dp.build_loader(data, "train", batch_size=4, shard_id=r, num_shards=num_shards, seed=3)
        for r in range(num_shards)
    ]
    expected_steps = (33 // num_shards) // 4
    for _epoch_index in range(3):
        every = []
        for loader in loaders:
            ids, labels, n = _epoch(loader)
            assert n == len(loader) == expected_steps
            assert [c for c, _ in ids] == labels
            every += ids
        assert len(every) == len(set(every)) == expected_steps * 4 * num_shards


def test_same_seed_same_batches(id_folder: Path) -> None:
    data = dp.prepare(DataSpec(kind="synthetic", root=id_folder.parent / "syn", image_size=16))

    def batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = dp.build_loader(data, "train", batch_size=8, seed=seed)
        return [(x.clone(), y.clone()) for _ in range(2) for x, y in loader]

    a, b, c = batches(5), batches(5), batches(6)
    assert all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c, strict=True))
    # the two epochs of one loader differ (reshuffled, new crops)
    half = len(a) // 2
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a[:half], a[half:], strict=True))


def test_abandoned_epoch_does_not_leak(id_folder: Path) -> None:
    data = _folder_spec(id_folder)
    loader = dp.build_loader(data, "val", batch_size=4)
    first = next(iter(loader))[0]
    ids, _, n = _epoch(loader)
    assert n == len(loader)
    assert decode_ids(first)[0] == ids[0]  # a fresh epoch starts from the beginning


def test_prepare_synthetic_builds_once(workdir: Path) -> None:
    data = DataSpec(
        kind="synthetic", synth=SynthSpec(classes=3, train_per_class=4, val_per_class=2)
    )
    first = dp.prepare(data)
    root = first.root
    assert root.is_absolute() and root.parent == (workdir / "bioprop-runs" / "data")
    assert root.name.startswith("synthetic-")
    files = sorted(root.rglob("*.JPEG"))
    assert len(files) == 3 * (4 + 2)
    stamps = [os.stat(f).st_mtime_ns for f in files]
    again = dp.prepare(data)
    assert again.root == root
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temp dirs left
    assert data.root is None  # the input section is not modified
    other = dp.prepare(data.model_copy(update={"synth": SynthSpec(classes=2)}))
    assert other.root != root and dp.num_classes(other) == 2


def test_prepare_imagefolder_names_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        dp.prepare(DataSpec(kind="imagefolder", root=tmp_path / "nope"))
    (tmp_path / "ds" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "ds" / "val")):
        dp.prepare(DataSpec(kind="imagefolder", root=tmp_path / "ds"))


def test_synthetic_classes_are_learnable(workdir: Path) -> None:
    """A tiny conv net separates the synthetic classes after two epochs at 32 px."""
    torch.manual_seed(0)
    data = dp.prepare(DataSpec(kind="synthetic", image_size=32))
    k = dp.num_classes(data)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 16, k),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train = dp.build_loader(data, "train", batch_size=16)
    for _ in range(2):
        for x, y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in dp.build_loader(data, "val", batch_size=16):
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    assert total == k * 16
    assert correct / total > 0.9


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_digits_contract(num_shards: int) -> None:
    data = dp.prepare(DataSpec(kind="digits", image_size=16))
    assert dp.num_classes(data) == 10
    seen = 0
    for split in ("train", "val"):
        steps = set()
        for rank in range(num_shards):
            loader = dp.build_loader(
                data, split, batch_size=32, shard_id=rank, num_shards=num_shards
            )
            n = 0
            for x, y in loader:
                assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32
                assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < 10
                n += 1
                seen += len(y) if split == "val" else 0
            steps.add(n)
            assert n == len(loader)
        assert len(steps) == 1
    assert seen == 1797 - int(1797 * 0.8)
    a = [y for _, y in dp.build_loader(data, "train", batch_size=32, seed=1)]
    b = [y for _, y in dp.build_loader(data, "train", batch_size=32, seed=1)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_digits_read_from_the_file_are_scikit_learns_digits() -> None:
    """Read from scikit-learn's data file without importing it: the arrays ``load_digits``
    gives, and the driver's split counts are the loader's."""
    import numpy as np
    from sklearn.datasets import load_digits

    from data_pipelines.digits import digits_split
    from data_pipelines.digits_file import load_digits_arrays

    images, labels = load_digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    data = dp.prepare(DataSpec(kind="digits", image_size=8))
    for split in ("train", "val"):
        assert dp.split_size(data, split) == len(digits_split(split)[1])
    assert dp.split_size(data, "train") + dp.split_size(data, "val") == 1797


def test_val_last_batch_may_be_empty_but_steps_stay_equal(tmp_path: Path) -> None:
    """5 images, 2 shards, batch 2: shards hold 2 and 3 images, both take 2 steps."""
    from dp_images import write_id_folder

    root = write_id_folder(tmp_path / "five", classes=1, per_class={"train": 5, "val": 5})
    data = _folder_spec(root)
    sizes = []
    for rank in range(2):
        loader = dp.build_loader(data, "val", batch_size=2, shard_id=rank, num_shards=2)
        sizes.append([len(y) for _, y in loader])
    assert sizes == [[2, 0], [2, 1]]
