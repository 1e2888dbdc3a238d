"""``pfa`` / ``pfa_o``: product feedback alignment (Ji-An & Benna, "Deep Learning without
Weight Symmetry").

The error ``delta`` of the layer's output reaches an expanded population of
``E = expansion * n_out`` units through a fixed random ``B`` (``E x n_out``, entries
``N(0, 1/E)``, so ``B^T B -> I`` as the expansion grows), and returns to the input
through a plastic ``R`` (``n_in x E``): ``delta_x = R B delta``. Stored as ``R^T`` shaped
``(E, *W.shape[1:])``, the backward matrix is ``backward_weight() = B^T R^T`` (shaped like
``W``). ``R`` learns locally from the expanded error and the input: ``dR^T = B dW``, given
by autograd through ``B^T R^T`` since the feedback Function hands ``dW`` to the backward
matrix (:class:`~trainers.rules.functional.ProductFeedback` computes the same through the
expanded population when that is cheaper). So ``R^T - B W`` moves only by decay: with the optimizer's weight decay and the
``decay`` param (applied to ``W`` and ``R`` in :meth:`after_step`) ``R^T -> B W`` and the
path ``(R B)^T -> B^T B W``, near ``W`` for a large expansion. ``pfa_o`` draws ``B`` with
orthonormal columns (default expansion 1: square orthogonal ``B``), so ``B^T B = I``.

Default ``expansion = 10``: the ratio Ji-An & Benna use for ImageNet ResNet-18 (their
public configs, ``papers.md``); the path angle once ``R^T = B W`` is then about
``acos(sqrt(10 / 11))`` = 17.5 degrees. ``decay`` defaults to 0: ``R`` decays through the
optimizer's weight decay, as in their configs (ImageNet: 5e-4). Batch Manhattan and Adam
break the product (``sign(B dW)`` is not ``B sign(dW)``), so the spec refuses them with
``pfa``/``pfa_o``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import DecayingFeedback, draw_normal, init_scale
from trainers.rules.functional import ProductFeedback


@register_rule("pfa")
class PFA(DecayingFeedback):
    """Backward ``B^T R^T``: fixed expansion ``B``, plastic ``R``; params ``expansion``, ``decay``."""

    defaults = {"expansion": 10.0, "decay": 0.0}
    plastic = True
    plastic_feedback = "feedback_r"

    def draw_expansion(self, n_expand: int, generator: torch.Generator) -> Tensor:
        return draw_normal(
            (n_expand, self.weight.shape[0]), generator, self.weight, 1.0 / math.sqrt(n_expand)
        )

    def init_feedback(self, generator: torch.Generator, expansion: float, decay: float) -> None:
        n_out = self.weight.shape[0]
        n_expand = max(1, round(float(expansion) * n_out))
        self.register_buffer("feedback_expand", self.draw_expansion(n_expand, generator))
        r = draw_normal(
            (n_expand, *self.weight.shape[1:]), generator, self.weight, init_scale(self.weight)
        )
        self.feedback_r = nn.Parameter(r)
        self.decay = float(decay)

    def backward_weight(self) -> Tensor:
        b, r = self.feedback_expand, self.feedback_r
        return (b.t() @ r.flatten(1)).view_as(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self._exact_bp or not torch.is_grad_enabled():
            return self.stock_forward(x)
        conv = None
        if isinstance(self, nn.Conv2d):
            x, padding = self.pad_input(x)
            conv = (self.stride, padding, self.dilation, self.groups)
        return ProductFeedback.apply(
            x, self.weight, self.bias, self.feedback_expand, self.feedback_r, conv
        )


@register_rule("pfa_o")
class PFAO(PFA):
    """``pfa`` with orthonormal-column ``B`` (square orthogonal at the default expansion 1)."""

    defaults = {"expansion": 1.0, "decay": 0.0}

    def draw_expansion(self, n_expand: int, generator: torch.Generator) -> Tensor:
        n_out = self.weight.shape[0]
        if n_expand < n_out:
            raise ValueError(f"pfa_o needs expansion >= 1, got {n_expand}/{n_out}")
        g = torch.randn(n_expand, n_out, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(g)
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        return q.to(device=self.weight.device, dtype=self.weight.dtype)
