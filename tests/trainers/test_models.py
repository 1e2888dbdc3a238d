"""Model zoo: every registered classification model builds and maps a batch to class logits
(the detection model is tested in ``test_detection.py``)."""

from __future__ import annotations

import pytest
import torch

from trainers.models import build_model, list_models

SIZES = {"alexnet_bn": 64, "resnet18": 32}


@pytest.mark.parametrize("name", list_models(task="classify"))
def test_model_outputs_logits(name):
    size = SIZES.get(name, 16)
    model = build_model(name, num_classes=7, image_size=size, in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="valid models: alexnet_bn"):
        build_model("vgg", num_classes=2, image_size=8)
