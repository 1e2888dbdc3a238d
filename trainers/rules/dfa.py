"""``dfa``: direct feedback alignment (Nøkland 2016; Launay et al. 2020).

Every hidden layer's error comes straight from the output error ``e`` (the gradient of
the loss with respect to the network's output, the last ``nn.Linear``'s output) through
its own fixed random matrix: the layer returns ``grad_input = e @ D`` with ``D`` of shape
``(n_classes, numel of one input sample)``, entries ``N(0, 1/n_classes)``; the
nonlinearity below turns it into ``(D^T e) * f'(a)``. The weight gradient stays local.
The output layer itself is ``fa`` (its ``D`` shaped like ``W``); on ``last_layer="bp"``
it stays exact BP and only ``e`` is captured from it.

``D`` is drawn lazily at the first training forward pass that needs an input gradient
(the input shape is known only then; a first layer never draws one) from the layer's seeded generator, so ranks agree; it is a buffer, saved in the
state_dict. Memory: ``n_classes * C*H*W`` floats per conv layer; fine for CIFAR-scale
inputs, large at ImageNet resolution.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, feedback_layers, layer_seed


class DirectContext:
    """Shared by the DFA layers of one model: the latest output error ``e``."""

    def __init__(self) -> None:
        self.error: Tensor | None = None


class _Capture(torch.autograd.Function):
    """Identity forward; backward stores the output error in the context."""

    @staticmethod
    def forward(ctx, y: Tensor, direct: DirectContext) -> Tensor:
        ctx.direct = direct
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: Tensor):
        ctx.direct.error = grad.detach().reshape(grad.shape[0], -1)
        return grad, None


class CaptureOutput:
    """Forward hook placing :class:`_Capture` on the output layer's result."""

    def __init__(self, direct: DirectContext) -> None:
        self.direct = direct

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return _Capture.apply(output, self.direct) if torch.is_grad_enabled() else output


class _DirectFeedback(torch.autograd.Function):
    """``y = layer(x)``;  ``dx = (e @ D).view_as(x)``;  ``dW``, ``db`` local."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, layer, direct):
        ctx.save_for_backward(x, feedback)
        ctx.layer, ctx.direct, ctx.has_bias = layer, direct, bias is not None
        ctx.weight_dtype = weight.dtype
        return layer.stock_forward(x)

    @staticmethod
    def backward(ctx, grad_out):
        x, feedback = ctx.saved_tensors
        layer = ctx.layer
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            e = ctx.direct.error
            if e is None or e.shape[0] != x.shape[0]:
                raise RuntimeError("dfa: no output error captured for this batch")
            grad_x = (e.to(feedback.dtype) @ feedback).view_as(x).to(x.dtype)
        dtype = grad_out.dtype
        if isinstance(layer, nn.Conv2d):
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad_out,
                x.to(dtype),
                layer.weight.to(dtype),
                [layer.out_channels] if ctx.has_bias else None,
                layer.stride,
                layer.padding,
                layer.dilation,
                False,
                [0, 0],
                layer.groups,
                [False, need_w, need_b and ctx.has_bias],
            )
        else:
            g2 = grad_out.reshape(-1, grad_out.shape[-1])
            gw = g2.t() @ x.reshape(-1, x.shape[-1]).to(dtype) if need_w else None
            gb = g2.sum(0) if need_b and ctx.has_bias else None
        if need_w:
            grad_w = gw.to(ctx.weight_dtype)
        if need_b and ctx.has_bias:
            grad_b = gb.to(ctx.weight_dtype)
        return grad_x, grad_w, grad_b, None, None, None


@register_rule("dfa")
class DFA(FeedbackLayer):
    """Hidden layers: ``grad_input = e @ D``; the output layer: ``fa``."""

    has_backward_weight = False

    def init_feedback(self, generator: torch.Generator) -> None:
        self.register_buffer("feedback_direct", torch.empty(0, device=self.weight.device))
        self.direct: DirectContext | None = None
        self.num_outputs = 0

    def backward_weight(self) -> Tensor:
        if not self.has_backward_weight:
            raise NotImplementedError("dfa hidden layers take the output error directly")
        return self.feedback_direct

    def forward(self, x: Tensor) -> Tensor:
        if self._exact_bp or not torch.is_grad_enabled():
            return self.stock_forward(x)
        if self.has_backward_weight:  # the output layer: fa
            return self.feedback_forward(x, self.feedback_direct)
        if self.direct is None:
            raise RuntimeError("dfa layers need trainers.rules.convert to link them to the output")
        xin = x
        if isinstance(self, nn.Conv2d) and (
            self.padding_mode != "zeros" or isinstance(self.padding, str)
        ):
            raise ValueError("dfa supports zero-padded convolutions with numeric padding")
        numel = xin[0].numel()
        if x.requires_grad and self.feedback_direct.shape != (self.num_outputs, numel):
            gen = torch.Generator().manual_seed(layer_seed(self.rule_seed, "dfa"))
            d = torch.randn(self.num_outputs, numel, generator=gen) / self.num_outputs**0.5
            self.feedback_direct = d.to(device=x.device, dtype=self.weight.dtype)
        return _DirectFeedback.apply(
            xin, self.weight, self.bias, self.feedback_direct, self, self.direct
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "feedback_direct"
        if key in state_dict and state_dict[key].shape != self.feedback_direct.shape:
            self.feedback_direct = torch.empty_like(state_dict[key], device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def convert_hook(model: nn.Module, last: str | None) -> None:
        """Link the model's DFA layers to a shared output error captured at ``last``."""
        if last is None:
            raise ValueError("dfa needs a final nn.Linear output layer")
        output = model.get_submodule(last)
        direct = DirectContext()
        output.register_forward_hook(CaptureOutput(direct))
        for name, layer in feedback_layers(model):
            if isinstance(layer, DFA):
                layer.direct = direct
                layer.num_outputs = output.out_features
                if name == last:
                    layer.has_backward_weight = True
                    gen = torch.Generator().manual_seed(layer_seed(layer.rule_seed, "dfa"))
                    std = output.out_features**-0.5
                    d = torch.randn(tuple(layer.weight.shape), generator=gen) * std
                    layer.feedback_direct = d.to(layer.weight)
