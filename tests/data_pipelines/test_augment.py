"""``data.augment`` in the DALI folder and packed-shard pipelines (CPU here; GPU in
test_gpu.py): ``none`` is the val transform, ``cifar`` a pad-4 crop plus flip."""

from __future__ import annotations

from pathlib import Path

import pytest
from augment_checks import SIZE, cifar_candidates, match, originals, raw, write_noise_folder

import data_pipelines as dp
from data_pipelines.pack import pack_imagefolder
from trainers.spec import DataSpec


@pytest.fixture(scope="module")
def noise_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noise_folder(tmp_path_factory.mktemp("noise"))


def _samples(root: Path, augment: str, epochs: int = 2):
    data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=SIZE, augment=augment))
    loader = dp.build_loader(data, "train", batch_size=4, seed=3)
    return [img for _ in range(epochs) for images, _ in loader for img in raw(images)]


@pytest.mark.parametrize("packed", [False, True])
def test_none_and_cifar_augmentation(noise_root: Path, tmp_path: Path, packed: bool) -> None:
    root = pack_imagefolder(noise_root, tmp_path / "wds") if packed else noise_root
    images = originals(noise_root)
    for sample in _samples(root, "none", epochs=1):
        found = match(sample, images, lambda img: [(0, 0, False, img)])
        assert found is not None, "augment none changed an image"
    seen = set()
    for sample in _samples(root, "cifar"):
        found = match(sample, images, cifar_candidates)
        assert found is not None, "a cifar sample is no pad-4 crop (or flip) of any image"
        seen.add(found[1:])
    assert len({(dx, dy) for dx, dy, _ in seen}) > 4  # random crops, not one fixed window
    assert {flip for _, _, flip in seen} == {False, True}
