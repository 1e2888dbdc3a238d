"""The torch-free name lists the spec validates against equal the registries they name."""

from __future__ import annotations

import subprocess
import sys

import pytest

import data_pipelines
from trainers import names
from trainers.models import MODELS, register_model
from trainers.optim import OPTIMIZERS
from trainers.rules import RULES, register_rule


def test_names_equal_their_registries() -> None:
    assert sorted(RULES) == sorted(names.RULE_NAMES)
    assert {name: fn.task for name, fn in MODELS.items()} == names.MODEL_TASKS
    assert sorted(OPTIMIZERS) == sorted(names.OPTIMIZER_NAMES)
    assert set(names.MODEL_TASKS.values()) == set(names.TASK_NAMES)
    assert sorted(data_pipelines.KINDS) == sorted(names.DATA_KINDS)


def test_registries_refuse_unlisted_names() -> None:
    with pytest.raises(ValueError, match="not listed in trainers/catalogue.py"):
        register_rule("nope")
    with pytest.raises(ValueError, match="not listed in trainers/catalogue.py"):
        register_model("vgg")
    with pytest.raises(ValueError, match="listed for task 'detect'"):
        register_model("retinanet_resnet18_fpn", task="classify")


def test_spec_and_names_import_without_torch() -> None:
    code = "import sys, trainers.spec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
