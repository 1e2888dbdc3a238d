"""``bp``: exact backpropagation (the baseline). Forward and backward are stock autograd.

``decay`` (default 0) shrinks ``W`` by ``(1 - decay)`` after every optimizer step, the
extra decay ``kp`` and ``pfa`` apply to ``W``: BP given the same decay is their matched
baseline (``trainers/reproductions/reproduce.py`` runs it beside them).
"""

from __future__ import annotations

from torch import Tensor

from trainers.rules._registry import register_rule
from trainers.rules.base import DecayingFeedback


@register_rule("bp")
class BP(DecayingFeedback):
    """Backward uses ``W`` itself; runs ``F.linear``/``F.conv2d`` so autograd is untouched."""

    defaults = {"decay": 0.0}
    plastic_feedback = None

    def init_feedback(self, generator, decay: float = 0.0) -> None:
        self.decay = float(decay)

    def backward_weight(self) -> Tensor:
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.stock_forward(x)
