"""``fa``: feedback alignment (Lillicrap, Cownden, Tweed, Akerman 2016).

Backward uses a fixed random ``B`` with ``W``'s scale (normal, std = the std of ``W`` when
the rule is attached), drawn once from the layer's seeded generator and kept as a buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, draw_normal, init_scale


@register_rule("fa")
class FA(FeedbackLayer):
    """``grad_input = grad_output @ B``, ``B ~ N(0, s^2)`` fixed."""

    def init_feedback(self, generator: torch.Generator) -> None:
        scale = init_scale(self.weight)
        self.register_buffer(
            "feedback", draw_normal(self.weight.shape, generator, self.weight, scale)
        )

    def backward_weight(self) -> Tensor:
        return self.feedback
