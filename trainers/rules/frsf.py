"""``frsf``: fixed random-magnitude sign-concordant feedback (Liao et al. 2016; BioTorch).

Backward uses ``|M| * sign(W)`` with ``M ~ N(0, s^2)`` drawn once (``s`` = ``W``'s init
scale); the sign follows ``W`` every step, the magnitudes stay fixed.
"""

from __future__ import annotations

import torch

from trainers.rules._registry import register_rule
from trainers.rules.base import SignFeedback, draw_normal, init_scale


@register_rule("frsf")
class FRSF(SignFeedback):
    """``B = |M| * sign(W)``, ``M`` fixed."""

    def init_feedback(self, generator: torch.Generator) -> None:
        m = draw_normal(self.weight.shape, generator, self.weight, init_scale(self.weight))
        self.register_buffer("feedback_magnitude", m.abs())
