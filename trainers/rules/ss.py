"""``ss``: sign-symmetry (Liao, Leibo, Poggio 2016; Xiao, Chen, Liao, Poggio 2018).

Backward uses ``s * sign(W)``, following ``W``'s sign every step, with ``s`` the scale
that initialised the layer (the std of ``W`` when the rule is attached: Xiao's
``sqrt(2/(k*k*out_channels))`` for torchvision ResNets), kept as a 0-d buffer.
"""

from __future__ import annotations

import torch

from trainers.rules._registry import register_rule
from trainers.rules.base import SignFeedback, init_scale


@register_rule("ss")
class SS(SignFeedback):
    """``B = s * sign(W)``; ``params``: ``scale`` overrides ``s``."""

    defaults = {"scale": None}
    magnitude = "feedback_scale"

    def init_feedback(self, generator: torch.Generator, scale: float | None) -> None:
        s = init_scale(self.weight) if scale is None else float(scale)
        self.register_buffer("feedback_scale", torch.tensor(s, device=self.weight.device))
