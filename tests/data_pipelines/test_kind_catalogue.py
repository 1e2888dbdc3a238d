"""The data kinds' descriptors equal the registered kinds, and the data section is validated
from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import data_pipelines
from data_pipelines.catalogue import KIND_INFO
from data_pipelines.spec import DataSpec
from trainers.spec import ExperimentSpec


def test_every_described_kind_is_registered_and_every_registered_kind_described() -> None:
    assert sorted(KIND_INFO) == sorted(data_pipelines.KINDS)


@pytest.mark.parametrize("kind", list(KIND_INFO))
def test_augmentations_root_and_default_come_from_the_descriptor(kind: str, tmp_path) -> None:
    info = KIND_INFO[kind]
    root = {"root": str(tmp_path)} if info.needs_root else {}
    assert DataSpec(kind=kind, **root).augmentation == info.default_augment
    for augment in ("imagenet", "cifar", "none"):
        if augment in info.augmentations:
            assert DataSpec(kind=kind, augment=augment, **root).augmentation == augment
        else:
            with pytest.raises(ValidationError, match=f"it takes {', '.join(info.augmentations)}"):
                DataSpec(kind=kind, augment=augment, **root)
    if info.needs_root:
        with pytest.raises(
            ValidationError, match=f"data.root is required when data.kind is '{kind}'"
        ):
            DataSpec(kind=kind)


@pytest.mark.parametrize("kind", list(KIND_INFO))
def test_a_kind_serves_only_its_tasks(kind: str, tmp_path) -> None:
    data = {"kind": kind, "root": str(tmp_path)} if KIND_INFO[kind].needs_root else {"kind": kind}
    for task, model in (("classify", "mlp"), ("detect", "retinanet_resnet18_fpn")):
        spec = {"task": task, "model": model, "data": data}
        if task in KIND_INFO[kind].tasks:
            assert ExperimentSpec.model_validate(spec).data.kind == kind
        else:
            with pytest.raises(ValidationError, match=f"does not fit task '{task}'"):
                ExperimentSpec.model_validate(spec)


def test_every_kind_counts_its_splits_as_the_files_on_disk(tmp_path) -> None:
    """What a run's MLflow dataset input records: the images per split, counted by the kind."""
    root = data_pipelines.synth_imagenet(
        tmp_path / "set", classes=3, train_per_class=5, val_per_class=2, size=16
    )
    folder = DataSpec(kind="imagefolder", root=root)
    for split, per_class in (("train", 5), ("val", 2)):
        on_disk = sum(1 for p in (root / split).rglob("*") if p.is_file())
        assert data_pipelines.split_size(folder, split) == on_disk == 3 * per_class
    digits = data_pipelines.prepare(DataSpec(kind="digits"))
    sizes = [data_pipelines.split_size(digits, s) for s in ("train", "val")]
    assert sum(sizes) == 1797  # scikit-learn's digits, split without loss
