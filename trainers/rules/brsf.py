"""``brsf``: batchwise random-magnitude sign-concordant feedback (Liao et al. 2016; BioTorch).

Backward uses ``|M| * sign(W)`` with ``M ~ N(0, s^2)`` redrawn for every training batch.
The draw comes from a generator seeded by (run seed, layer name, ``feedback_step``), a
counter kept in the state_dict, so every rank draws the same ``M`` and a resumed run
continues the same sequence.

Cost: per training batch one draw of ``n`` normals in place into the magnitude buffer
(``normal_(0, s)``, already scaled), one ``abs_``, and ``sign(W) * |M|`` as for every
sign rule; no temporary tensors. On a GPU the draw is a single Philox kernel; on a CPU it
is the bulk of the rule's extra time (about 12 M normals for ResNet-18).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, init_scale, layer_seed


@register_rule("brsf")
class BRSF(FeedbackLayer):
    """``B = |M_t| * sign(W)``, ``M_t`` redrawn at each training forward pass."""

    def init_feedback(self, generator: torch.Generator) -> None:
        device = self.weight.device
        self.register_buffer("feedback_scale", torch.tensor(init_scale(self.weight), device=device))
        self.register_buffer("feedback_step", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("feedback_magnitude", torch.empty_like(self.weight))
        self.redraw()

    def redraw(self) -> None:
        """Draw the next ``|M|`` (identical on every rank)."""
        step = int(self.feedback_step)
        gen = torch.Generator(device=self.weight.device)
        gen.manual_seed(layer_seed(self.rule_seed, f"brsf{step}"))
        scale = float(self.feedback_scale)  # a buffer: a resumed run's comes from its checkpoint
        self.feedback_magnitude.normal_(0.0, scale, generator=gen).abs_()
        self.feedback_step.fill_(step + 1)

    def backward_weight(self) -> Tensor:
        # a new tensor outside autograd: a layer called several times per batch (RetinaNet's
        # shared head convs) redraws the buffer in place between calls
        return torch.sign(self.weight.detach()).mul_(self.feedback_magnitude)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and not self._exact_bp:
            with torch.no_grad():
                self.redraw()
        return super().forward(x)
