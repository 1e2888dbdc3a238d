"""The backward math of every feedback rule: two ``torch.autograd.Function``s.

Each takes the backward matrix ``bw`` (shaped like the weight) as an argument and
differs from backprop in one place only: where BP uses ``W`` for the input gradient,
these use ``bw``. The weight gradient stays local. When ``bw`` itself requires grad
(plastic feedback: Kolen-Pollack's ``B``, PFA's ``R`` through ``bw = B^T R^T``), it
receives the local weight gradient, ``grad_bw = grad_W``, so the optimizer moves it
exactly as it moves ``W`` (and DDP all-reduces it like any other gradient).

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
    "LinearFeedback",
    "ProductFeedback",
    "conv2d_feedback",
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


def _flops_expanded(positions: int, n_expand: int, n_out: int, fan_in: int) -> int:
    return positions * n_expand * (n_out + 2 * fan_in)


def _flops_product(positions: int, n_expand: int, n_out: int, fan_in: int) -> int:
    return 2 * n_expand * n_out * fan_in + positions * n_out * fan_in


class ProductFeedback(torch.autograd.Function):
    """PFA's factored backward, ``bw = B^T R^T`` (``B``: ``E x n_out``, ``R^T``: ``E x fan_in``).

    ``h = dy B^T`` (the expanded error);  ``dx = h R^T`` (Linear) or
    ``conv_transpose2d(h, R^T)`` (Conv2d);  ``dR^T = h^T x`` = ``B dW``;  ``dW``, ``db`` local.
    Per step it takes the cheaper of two equal computations: through the expanded population
    (cost ~ positions * E * (n_out + 2 fan_in), grows with the batch) or by forming ``bw``
    (cost ~ 2 E n_out fan_in, fixed), so small batches do not pay for the matrix product.
    ``conv`` is ``None`` for a Linear, else ``(stride, padding, dilation, groups)``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, expand, r_t, conv):
        ctx.save_for_backward(x, weight, expand, r_t)
        ctx.conv, ctx.has_bias, ctx.weight_dtype = conv, bias is not None, weight.dtype
        if conv is None:
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, *conv)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, expand, r_t = ctx.saved_tensors
        need_x, need_w, need_b, _, need_r = ctx.needs_input_grad[:5]
        dtype = grad_out.dtype
        b, r = expand.to(dtype), r_t.to(dtype)
        xd = x.to(dtype)
        n_expand, n_out = b.shape
        fan_in = r[0].numel()
        grad_x = grad_w = grad_b = grad_r = None
        if ctx.conv is None:
            g2 = grad_out.reshape(-1, n_out)
            x2 = xd.reshape(-1, x.shape[-1])
            if need_w or not need_r:
                grad_w = g2.t() @ x2
            if _flops_expanded(g2.shape[0], n_expand, n_out, fan_in) <= _flops_product(
                g2.shape[0], n_expand, n_out, fan_in
            ):
                h = g2 @ b.t()
                if need_x:
                    grad_x = (h @ r).reshape(x.shape)
                if need_r:
                    grad_r = h.t() @ x2
            else:
                if grad_w is None:
                    grad_w = g2.t() @ x2
                if need_x:
                    grad_x = (g2 @ (b.t() @ r)).reshape(x.shape)
                if need_r:
                    grad_r = b @ grad_w
            if need_b and ctx.has_bias:
                grad_b = g2.sum(0)
        else:
            stride, padding, dilation, groups = ctx.conv
            positions = grad_out.shape[0] * grad_out.shape[2] * grad_out.shape[3]
            bias_sizes = [n_out] if ctx.has_bias else None
            cheap = _flops_expanded(positions, n_expand, n_out, fan_in) <= _flops_product(
                positions, n_expand, n_out, fan_in
            )
            if cheap and groups == 1:
                _, gw, gb = torch.ops.aten.convolution_backward(
                    grad_out, xd, weight.to(dtype), bias_sizes, stride, padding, dilation, False,
                    [0, 0], groups, [False, need_w, need_b and ctx.has_bias],
                )  # fmt: skip
                h = torch.einsum("eo,nohw->nehw", b, grad_out)
                gx, gr, _ = torch.ops.aten.convolution_backward(
                    h, xd, r, None, stride, padding, dilation, False, [0, 0], groups,
                    [need_x, need_r, False],
                )  # fmt: skip
                grad_x = gx if need_x else None
                grad_r = gr if need_r else None
            else:
                bw = (b.t() @ r.flatten(1)).view(n_out, *r.shape[1:])
                gx, gw, gb = torch.ops.aten.convolution_backward(
                    grad_out, xd, bw, bias_sizes, stride, padding, dilation, False, [0, 0],
                    groups, [need_x, True, need_b and ctx.has_bias],
                )  # fmt: skip
                grad_x = gx if need_x else None
                if need_r:
                    grad_r = (b @ gw.flatten(1)).view_as(r)
            grad_w = gw if need_w else None
            grad_b = gb if (need_b and ctx.has_bias) else None
        return (
            None if grad_x is None else grad_x.to(x.dtype),
            None if grad_w is None or not need_w else grad_w.to(ctx.weight_dtype),
            None if grad_b is None else grad_b.to(ctx.weight_dtype),
            None,
            None if grad_r is None else grad_r.to(r_t.dtype),
            None,
        )
