"""``bp``: exact backpropagation (the baseline). Forward and backward are stock autograd."""

from __future__ import annotations

from torch import Tensor

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer


@register_rule("bp")
class BP(FeedbackLayer):
    """Backward uses ``W`` itself; runs ``F.linear``/``F.conv2d`` so autograd is untouched."""

    def backward_weight(self) -> Tensor:
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.stock_forward(x)
