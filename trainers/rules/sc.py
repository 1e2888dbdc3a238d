"""``sc``: Liao et al. 2016's sign-concordance sweep, ``V = M * sign(W) * S_p``.

Backward uses ``|M| * sign(W) * S_p``: ``M ~ N(0, s^2)`` fixed random magnitudes and
``S_p`` a fixed random sign flip, ``+1`` with probability ``p`` and ``-1`` otherwise, so a
fraction ``p`` of the feedback entries agrees in sign with ``W``. ``p=1`` is ``frsf``.
Both are drawn once and stored together as the signed buffer ``feedback_magnitude``.
"""

from __future__ import annotations

import torch

from trainers.rules._registry import register_rule
from trainers.rules.base import SignFeedback, draw_normal, init_scale


@register_rule("sc")
class SC(SignFeedback):
    """``B = |M| * S_p * sign(W)``; ``params``: ``p`` (sign-concordance probability)."""

    defaults = {"p": 0.75}

    def init_feedback(self, generator: torch.Generator, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"sc: p must be in [0, 1], got {p}")
        m = draw_normal(self.weight.shape, generator, self.weight, init_scale(self.weight)).abs()
        u = torch.rand(tuple(self.weight.shape), generator=generator).to(m.device)
        flips = torch.where(u < p, 1.0, -1.0).to(m.dtype)
        self.register_buffer("feedback_magnitude", m * flips)
