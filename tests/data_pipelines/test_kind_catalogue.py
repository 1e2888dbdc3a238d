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
