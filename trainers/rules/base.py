"""The interface every feedback rule implements, and the Linear/Conv2d layers it rides on.

A rule is a small mixin class over :class:`FeedbackLayer` holding its state (fixed
feedback as buffers, plastic feedback as parameters) and saying, in
:meth:`FeedbackLayer.backward_weight`, which tensor stands where backprop uses ``W``.
:func:`~trainers.rules._registry.register_rule` combines it with :class:`FeedbackLinear`
and :class:`FeedbackConv2d`, which route the forward through the autograd Functions of
:mod:`trainers.rules.functional`. ``weight`` and ``bias`` keep their names, so a BP
state_dict loads into a converted layer (feedback keys it lacks keep their seeded values).
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.rules.functional import conv2d_feedback, linear_feedback

__all__ = [
    "FeedbackConv2d",
    "FeedbackLayer",
    "FeedbackLinear",
    "SignFeedback",
    "DecayingFeedback",
    "draw_normal",
    "exact_backprop",
    "feedback_layers",
    "init_scale",
    "layer_seed",
    "same_shape",
    "unwrap",
]


def layer_seed(seed: int, name: str) -> int:
    """A per-layer seed from the run's ``seed`` and the layer's qualified name.

    Stable across processes (crc32, not Python's salted ``hash``): layers differ, ranks agree.
    """
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63 - 1)


def fan_out(weight: Tensor) -> int:
    return weight.shape[0] * math.prod(weight.shape[2:])


def init_scale(weight: Tensor) -> float:
    """The scale that initialised the layer: the std of ``W`` when the rule is attached.

    For torchvision ResNets this is Xiao et al.'s ``sqrt(2/(k*k*out_channels))``; for a
    zero-initialised layer it falls back to that formula.
    """
    std = float(weight.detach().double().std()) if weight.numel() > 1 else 0.0
    return std if std > 0 else math.sqrt(2.0 / fan_out(weight))


def draw_normal(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator, like: Tensor, std: float = 1.0
) -> Tensor:
    """``N(0, std^2)`` drawn on CPU from ``generator`` (device-independent), moved to ``like``."""
    out = torch.randn(tuple(shape), generator=generator, dtype=torch.float32) * std
    return out.to(device=like.device, dtype=like.dtype)


class FeedbackLayer:
    """Mixin: one feedback rule. Subclasses set ``defaults`` and implement two methods.

    - :meth:`init_feedback` registers the rule's buffers/parameters (called once, with a
      ``torch.Generator`` seeded from the run seed and the layer's name);
    - :meth:`backward_weight` returns the tensor, shaped like ``weight``, used where BP
      uses ``W``: ``grad_input = grad_output @ backward_weight()`` for a Linear.
    Optional: :meth:`after_step`, called once per optimizer step by
    :func:`trainers.rules.after_step`.
    """

    rule_name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    has_backward_weight: ClassVar[bool] = True
    plastic: ClassVar[bool] = False  # backward matrix learns by gradient (receives dW)
    Linear: ClassVar[type[nn.Linear]]
    Conv2d: ClassVar[type[nn.Conv2d]]
    _exact_bp: bool = False

    weight: nn.Parameter
    bias: nn.Parameter | None

    def init_feedback(self, generator: torch.Generator, **params: Any) -> None:
        """Create the rule's feedback state."""

    def backward_weight(self) -> Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        """Per-step update of plastic feedback (default: none)."""

    def feedback_keys(self) -> list[str]:
        """state_dict keys (local) owned by the rule rather than by the BP layer."""
        names = [n for n, _ in self.named_parameters(recurse=False)]
        names += [n for n, _ in self.named_buffers(recurse=False)]
        return [n for n in names if n not in ("weight", "bias")]

    # --- forward ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self._exact_bp or not torch.is_grad_enabled():
            return self.stock_forward(x)
        if not x.requires_grad and not self.plastic:
            # no input gradient to compute (e.g. the first layer): skip building the matrix
            return self.feedback_forward(x, self.weight.detach())
        return self.feedback_forward(x, self.backward_weight())

    def stock_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def feedback_forward(self, x: Tensor, bw: Tensor) -> Tensor:
        raise NotImplementedError

    # --- construction ----------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            valid = ", ".join(cls.defaults) or "none"
            raise ValueError(
                f"rule {cls.rule_name!r} got unknown params {unknown}; valid params: {valid}"
            )
        return {**cls.defaults, **params}

    @classmethod
    def from_layer(cls, layer: nn.Module, *, seed: int = 0, name: str = "", **params: Any):
        """A rule layer sharing ``layer``'s weight and bias Parameters."""
        merged = cls.check_params(params)
        new = same_shape(layer, linear=cls.Linear, conv2d=cls.Conv2d)
        new.layer_name = name
        new.rule_seed = layer_seed(seed, name)
        new.rule_params = merged
        with torch.no_grad():
            new.init_feedback(torch.Generator().manual_seed(new.rule_seed), **merged)
        return new

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        start = len(missing_keys)
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        own = {prefix + k for k in self.feedback_keys()}
        missing_keys[start:] = [k for k in missing_keys[start:] if k not in own]

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in getattr(self, "rule_params", {}).items())
        return f"{super().extra_repr()}, rule={self.rule_name}" + (f", {params}" if params else "")


class SignFeedback(FeedbackLayer):
    """Sign-concordant feedback ``B = sign(W) * m``, ``m`` the buffer named by
    :attr:`magnitude` (a 0-d scale or a tensor shaped like ``W``); the sign follows ``W``
    every step (``ss``, ``usf``, ``frsf``, ``sc``)."""

    magnitude: ClassVar[str] = "feedback_magnitude"

    def backward_weight(self) -> Tensor:
        return torch.sign(self.weight).mul_(getattr(self, self.magnitude))


class DecayingFeedback(FeedbackLayer):
    """With ``self.decay > 0``, ``W`` and the plastic feedback named by
    :attr:`plastic_feedback` (``kp``'s ``B``, ``pfa``'s path ``B^T R^T``; none for ``bp``,
    its matched baseline) shrink after every optimizer step: ``W <- (1-decay) W``, ``F <- (1-decay) F``."""

    plastic_feedback: ClassVar[str | None] = "feedback"
    decay: float = 0.0

    def after_step(self) -> None:
        if self.decay:
            self.weight.mul_(1.0 - self.decay)
            if self.plastic_feedback is not None:
                getattr(self, self.plastic_feedback).mul_(1.0 - self.decay)


class FeedbackLinear(FeedbackLayer, nn.Linear):
    """``nn.Linear`` whose input gradient is ``grad_output @ backward_weight()``."""

    def stock_forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def feedback_forward(self, x: Tensor, bw: Tensor) -> Tensor:
        return linear_feedback(x, self.weight, self.bias, bw)


class FeedbackConv2d(FeedbackLayer, nn.Conv2d):
    """``nn.Conv2d`` whose input gradient is ``conv_transpose2d(grad_output, backward_weight())``."""

    def stock_forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, self.bias)

    def pad_input(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``x`` padded for non-zero padding modes or string padding, and the padding left."""
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        elif isinstance(padding, str):
            if padding == "same":
                x = F.pad(x, self._reversed_padding_repeated_twice)
            padding = (0, 0)
        return x, padding

    def feedback_forward(self, x: Tensor, bw: Tensor) -> Tensor:
        x, padding = self.pad_input(x)
        return conv2d_feedback(
            x, self.weight, self.bias, bw, self.stride, padding, self.dilation, self.groups
        )


def same_shape(
    layer: nn.Module,
    *,
    linear: type[nn.Linear] = nn.Linear,
    conv2d: type[nn.Conv2d] = nn.Conv2d,
) -> nn.Module:
    """A ``linear`` or ``conv2d`` layer (stock by default) of ``layer``'s shape and options,
    sharing its weight and bias Parameters and its train/eval mode."""
    if isinstance(layer, nn.Linear):
        new = linear(
            layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta"
        )
    elif isinstance(layer, nn.Conv2d):
        new = conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device="meta",
        )
    else:
        raise TypeError(f"rules convert nn.Linear and nn.Conv2d, not {type(layer).__name__}")
    new.weight = layer.weight
    if layer.bias is not None:
        new.bias = layer.bias
    new.train(layer.training)
    return new


def feedback_layers(model: nn.Module) -> Iterator[tuple[str, FeedbackLayer]]:
    """``(qualified name, layer)`` for every rule layer of ``model`` (DDP/compile unwrapped)."""
    for name, module in unwrap(model).named_modules():
        if isinstance(module, FeedbackLayer):
            yield name, module


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP/DataParallel (``.module``) or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


@contextlib.contextmanager
def exact_backprop(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every rule layer of ``model`` runs stock autograd (exact BP)."""
    layers = [layer for _, layer in feedback_layers(model)]
    for layer in layers:
        layer._exact_bp = True
    try:
        yield model
    finally:
        for layer in layers:
            layer._exact_bp = False
