"""The backward math of every feedback rule: a few ``torch.autograd.Function``s.

Each takes the backward matrix ``bw`` (shaped like the weight) as an argument and
differs from backprop in one place only: where BP uses ``W`` for the input gradient,
these use ``bw``. The weight gradient stays local. When ``bw`` itself requires grad
(plastic feedback: Kolen-Pollack's ``B``; PFA's path ``B^T R^T`` through
:class:`GramGradient`), it receives the local weight gradient, ``grad_bw = grad_W``, so
the optimizer moves it exactly as it moves ``W`` (and DDP all-reduces it like any other
gradient).

Autocast: the forward runs under the caller's autocast; the backward casts ``bw`` and
the saved input to the incoming gradient's dtype and returns each gradient in the dtype
of the tensor it belongs to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Conv2dFeedback",
    "GramGradient",
    "LinearFeedback",
    "conv2d_feedback",
    "gram_gradient",
    "linear_feedback",
]


class LinearFeedback(torch.autograd.Function):
    """``y = x W^T + b``;  ``dx = dy @ bw``;  ``dW = dy^T x``;  ``db = sum(dy)``;  ``dbw = dW``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, bw: Tensor) -> Tensor:
        ctx.save_for_backward(x, bw)
        ctx.weight_dtype = weight.dtype
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, bw = ctx.saved_tensors
        need_x, need_w, need_b, need_bw = ctx.needs_input_grad
        grad_x = grad_w = grad_b = grad_bw = None
        if need_x:
            grad_x = grad_out.matmul(bw.to(grad_out.dtype)).to(x.dtype)
        if need_w or need_bw:
            g2 = grad_out.reshape(-1, grad_out.shape[-1])
            grad_w = g2.t().matmul(x.reshape(-1, x.shape[-1]).to(g2.dtype)).to(ctx.weight_dtype)
            if need_bw:
                grad_bw = grad_w.to(bw.dtype)
            if not need_w:
                grad_w = None
        if need_b and ctx.has_bias:
            grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0).to(ctx.weight_dtype)
        return grad_x, grad_w, grad_b, grad_bw


class Conv2dFeedback(torch.autograd.Function):
    """``y = conv2d(x, W) + b``;  ``dx = conv_transpose2d(dy, bw)``;  ``dW`` the local
    ``conv2d_weight(x, dy)``;  ``db = sum(dy)``;  ``dbw = dW``.

    One ``aten.convolution_backward`` call with ``bw`` in the weight's place computes all
    three (its weight gradient never reads the weight), so the rule costs what BP costs.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, bw, stride, padding, dilation, groups) -> Tensor:
        ctx.save_for_backward(x, bw)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.weight_dtype = weight.dtype
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, bw = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b, need_bw = ctx.needs_input_grad[:4]
        dtype = grad_out.dtype
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_out,
            x.to(dtype),
            bw.to(dtype),
            [bw.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_x, need_w or need_bw, need_b and ctx.has_bias],
        )
        grad_x = gx.to(x.dtype) if need_x else None
        grad_bw = gw.to(bw.dtype) if need_bw else None
        grad_w = gw.to(ctx.weight_dtype) if need_w else None
        grad_b = gb.to(ctx.weight_dtype) if (need_b and ctx.has_bias) else None
        return grad_x, grad_w, grad_b, grad_bw, None, None, None, None


def linear_feedback(x: Tensor, weight: Tensor, bias: Tensor | None, bw: Tensor) -> Tensor:
    """A linear layer whose input gradient is ``grad_out @ bw``."""
    return LinearFeedback.apply(x, weight, bias, bw)


def conv2d_feedback(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    bw: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    """A conv2d layer whose input gradient is ``conv_transpose2d(grad_out, bw)``."""
    return Conv2dFeedback.apply(x, weight, bias, bw, stride, padding, dilation, groups)


class GramGradient(torch.autograd.Function):
    """``P`` unchanged forward;  ``dP = G @ grad`` (over ``P``'s first dimension) backward.

    PFA's path ``P = B^T R^T``: ``R^T`` receives ``B dW``, so ``P`` receives ``B^T B dW``
    (:mod:`trainers.rules.pfa`).
    """

    @staticmethod
    def forward(ctx, path: Tensor, gram: Tensor) -> Tensor:
        ctx.save_for_backward(gram)
        return path.view_as(path)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (gram,) = ctx.saved_tensors
        return (gram.to(grad.dtype) @ grad.flatten(1)).view_as(grad), None


def gram_gradient(path: Tensor, gram: Tensor) -> Tensor:
    """``path`` itself, whose gradient arrives multiplied by ``gram`` from the left."""
    return GramGradient.apply(path, gram)
