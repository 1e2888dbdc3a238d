"""Model zoo: a name -> builder registry of the networks the papers train.

- ``mlp``: 3-layer ReLU MLP on flattened images (PFA's 784-512-512-10 shape, scaled).
- ``convnet``: a small 3-block conv net with BatchNorm (the demo's model).
- ``resnet20``: CIFAR-style ResNet-20 (He et al. 2016; BioTorch's benchmark net).
- ``resnet18``: torchvision's ResNet-18 (Xiao et al. 2018).
- ``alexnet_bn``: AlexNet with BatchNorm after every conv and FC layer (Xiao et al.'s variant).

Every builder returns a plain BP model; ``trainers.rules.convert`` swaps its layers for a rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18

__all__ = ["MODELS", "build_model", "register_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return wrap


def build_model(name: str, *, num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs on ``in_channels x image_size^2`` inputs."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, image_size=image_size, in_channels=in_channels)


@register_model("mlp")
def mlp(*, num_classes: int, image_size: int, in_channels: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_model("convnet")
def convnet(*, num_classes: int, image_size: int, in_channels: int, width: int = 16) -> nn.Module:
    return nn.Sequential(
        _conv_bn(in_channels, width),
        nn.MaxPool2d(2),
        _conv_bn(width, 2 * width),
        nn.MaxPool2d(2),
        _conv_bn(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


class _BasicBlock(nn.Module):
    """CIFAR ResNet block with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet20")
def resnet20(*, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(in_channels, 16)]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


@register_model("resnet18")
def resnet18_(*, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    model = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


@register_model("alexnet_bn")
def alexnet_bn(*, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    """AlexNet (torchvision's channel widths) with BatchNorm after every conv and FC layer."""

    def conv(cin: int, cout: int, k: int, s: int, p: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

    def fc(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(True)]

    features = nn.Sequential(
        *conv(in_channels, 64, 11, 4, 2),
        nn.MaxPool2d(3, 2),
        *conv(64, 192, 5, 1, 2),
        nn.MaxPool2d(3, 2),
        *conv(192, 384, 3, 1, 1),
        *conv(384, 256, 3, 1, 1),
        *conv(256, 256, 3, 1, 1),
        nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6),
    )
    return nn.Sequential(
        features,
        nn.Flatten(),
        *fc(256 * 6 * 6, 4096),
        *fc(4096, 4096),
        nn.Linear(4096, num_classes),
    )
