"""``usf``: uniform sign-concordant feedback (Liao et al. 2016, as in BioTorch).

Backward uses ``s * sign(W)`` with BioTorch's constant ``s = sqrt(2 / (fan_in + fan_out))``
(the Xavier std) instead of ``ss``'s measured init scale; otherwise the same rule.
"""

from __future__ import annotations

import math

import torch

from trainers.rules._registry import register_rule
from trainers.rules.base import SignFeedback


@register_rule("usf")
class USF(SignFeedback):
    """``B = sqrt(2/(fan_in+fan_out)) * sign(W)``."""

    magnitude = "feedback_scale"

    def init_feedback(self, generator: torch.Generator) -> None:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(self.weight)
        s = math.sqrt(2.0 / (fan_in + fan_out))
        self.register_buffer("feedback_scale", torch.tensor(s, device=self.weight.device))
