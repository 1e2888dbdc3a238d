"""Model zoo: a name -> builder registry of the networks the papers train.

- ``mlp``: ReLU MLP on flattened images, ``depth`` hidden layers of ``hidden`` units (default
  2 of 256: PFA's 784-512-512-10 shape, scaled), Linear-BN-ReLU blocks with ``bn``.
- ``convnet``: a small 3-block conv net with BatchNorm (the demo's model).
- ``resnet20``: CIFAR-style ResNet-20 (He et al. 2016; BioTorch's benchmark net).
- ``resnet18``: torchvision's ResNet-18 (Xiao et al. 2018).
- ``alexnet_bn``: AlexNet with BatchNorm after every conv and FC layer (Xiao et al.'s variant).
- ``retinanet_resnet18_fpn`` (task ``detect``): RetinaNet on a ResNet-18 FPN backbone
  (Xiao et al.'s detection experiment); :mod:`trainers.detection` converts and trains it.

Every builder returns a plain BP model; ``trainers.rules.convert`` swaps its layers for a rule.
Each is registered with the task it serves (``classify`` unless said otherwise), as
``trainers.catalogue.MODELS`` lists it; ``builder.task`` holds it.
Layers carry readable module paths (``block1.conv``, ``layer2.0.conv1``, ``fc``, as
torchvision's ResNet does), because those paths are the layer names in alignment metrics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from trainers import catalogue
from trainers.names import check_name

__all__ = ["MODELS", "build_model", "list_models", "register_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(
    name: str, *, task: str = "classify"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``(*, num_classes, image_size, in_channels) -> model``
    for ``task`` (refuses duplicates, and names or tasks that ``trainers.catalogue.MODELS``
    does not list)."""
    check_name("model", name, catalogue.MODELS)
    listed = catalogue.MODELS[name].task
    if listed != task:
        raise ValueError(
            f"model {name!r} is listed for task {listed!r} in trainers/catalogue.py, not {task!r}"
        )

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        fn.task = task
        MODELS[name] = fn
        return fn

    return wrap


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, sorted; only those of ``task`` when given."""
    return sorted(name for name, fn in MODELS.items() if task in (None, fn.task))


def build_model(
    name: str, *, num_classes: int, image_size: int, in_channels: int = 3, **params
) -> nn.Module:
    """Build model ``name`` for ``num_classes`` outputs on ``in_channels x image_size^2`` inputs;
    ``params``: the spec's ``model_params`` (e.g. ``depth``, ``bn`` for ``mlp``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](
        num_classes=num_classes, image_size=image_size, in_channels=in_channels, **params
    )


@register_model("mlp")
def mlp(
    *,
    num_classes: int,
    image_size: int,
    in_channels: int,
    hidden: int = 256,
    depth: int = 2,
    bn: bool = False,
) -> nn.Module:
    """``depth`` hidden ReLU layers of ``hidden`` units (Linear-BN-ReLU blocks with ``bn``),
    named ``fc1``, ``bn1``, ``relu1``, ... and the classifier ``fc``."""
    layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    cin = in_channels * image_size * image_size
    for i in range(1, int(depth) + 1):
        layers[f"fc{i}"] = nn.Linear(cin, int(hidden))
        if bn:
            layers[f"bn{i}"] = nn.BatchNorm1d(int(hidden))
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        cin = int(hidden)
    layers["fc"] = nn.Linear(cin, num_classes)
    return _named(**layers)


def _named(**layers: nn.Module) -> nn.Sequential:
    """An ``nn.Sequential`` whose children have names instead of indices."""
    return nn.Sequential(OrderedDict(layers))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return _named(
        conv=nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        bn=nn.BatchNorm2d(cout),
        relu=nn.ReLU(inplace=True),
    )


@register_model("convnet")
def convnet(*, num_classes: int, image_size: int, in_channels: int, width: int = 16) -> nn.Module:
    return _named(
        block1=_conv_bn(in_channels, width),
        pool1=nn.MaxPool2d(2),
        block2=_conv_bn(width, 2 * width),
        pool2=nn.MaxPool2d(2),
        block3=_conv_bn(2 * width, 4 * width),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(4 * width, num_classes),
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
            self.shortcut = _named(
                conv=nn.Conv2d(cin, cout, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet20")
def resnet20(*, num_classes: int, image_size: int, in_channels: int, blocks: int = 3) -> nn.Module:
    """He et al.'s CIFAR ResNet with ``blocks`` basic blocks per stage: ``6 * blocks + 2``
    layers (3: ResNet-20, 1: ResNet-8, 5: ResNet-32); stages ``layer1``-``layer3`` as in
    torchvision's ResNet."""
    stages: dict[str, nn.Module] = {}
    cin = 16
    for stage, (cout, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        stages[f"layer{stage}"] = nn.Sequential(
            *(
                _BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                for i in range(int(blocks))
            )
        )
        cin = cout
    return _named(
        stem=_conv_bn(in_channels, 16),
        **stages,
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(64, num_classes),
    )


@register_model("resnet18")
def resnet18_(*, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    from torchvision.models import resnet18  # imported here: it costs a small setting 1-2 s

    model = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


@register_model("alexnet_bn")
def alexnet_bn(*, num_classes: int, image_size: int, in_channels: int) -> nn.Module:
    """AlexNet (torchvision's channel widths) with BatchNorm after every conv and FC layer."""

    def conv(i: int, cin: int, cout: int, k: int, s: int, p: int) -> dict[str, nn.Module]:
        return {
            f"conv{i}": nn.Conv2d(cin, cout, k, s, p, bias=False),
            f"bn{i}": nn.BatchNorm2d(cout),
            f"relu{i}": nn.ReLU(True),
        }

    def fc(i: int, cin: int, cout: int) -> dict[str, nn.Module]:
        return {
            f"fc{i}": nn.Linear(cin, cout, bias=False),
            f"bn{i}": nn.BatchNorm1d(cout),
            f"relu{i}": nn.ReLU(True),
        }

    features = _named(
        **conv(1, in_channels, 64, 11, 4, 2),
        pool1=nn.MaxPool2d(3, 2),
        **conv(2, 64, 192, 5, 1, 2),
        pool2=nn.MaxPool2d(3, 2),
        **conv(3, 192, 384, 3, 1, 1),
        **conv(4, 384, 256, 3, 1, 1),
        **conv(5, 256, 256, 3, 1, 1),
        pool5=nn.MaxPool2d(3, 2),
        pool=nn.AdaptiveAvgPool2d(6),
    )
    classifier = _named(**fc(6, 256 * 6 * 6, 4096), **fc(7, 4096, 4096))
    return _named(
        features=features,
        flatten=nn.Flatten(),
        classifier=classifier,
        fc=nn.Linear(4096, num_classes),
    )


@register_model("retinanet_resnet18_fpn", task="detect")
def retinanet_resnet18_fpn(*, num_classes: int, image_size: int, in_channels: int = 3) -> nn.Module:
    """RetinaNet with a ResNet-18 FPN backbone (BP; ``trainers.detection`` converts it).

    The backbone is torchvision's ``resnet18(weights=None)`` with ``nn.BatchNorm2d`` (not
    the frozen BatchNorm of pretrained detection backbones: it trains from scratch), all
    five stages trainable, C3-C5 into a 256-channel FPN with P6/P7 from C5, as
    ``retinanet_resnet50_fpn`` builds it. The transform's ``min_size``/``max_size`` and
    mean/std come from :func:`data_pipelines.coco.retinanet_transform_kwargs`: the loader
    already resizes (shorter side ``image_size``) and normalizes, so the transform neither
    rescales nor re-normalizes. At most 100 detections per image are kept (COCO scores the
    top 100; Detectron's RetinaNet keeps as many). ``num_classes`` counts object classes
    (labels ``0..num_classes-1``; RetinaNet's focal loss has no background class).
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from data_pipelines.coco import retinanet_transform_kwargs

    if in_channels != 3:
        raise ValueError(f"retinanet_resnet18_fpn takes RGB images, not {in_channels} channels")
    from torchvision.models import resnet18

    backbone = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
    fpn = _resnet_fpn_extractor(
        backbone, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(512, 256)
    )
    return RetinaNet(
        fpn, num_classes, detections_per_img=100, **retinanet_transform_kwargs(image_size)
    )
