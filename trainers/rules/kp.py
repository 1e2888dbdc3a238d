"""``kp``: Kolen-Pollack (Kolen & Pollack 1994; Akrout et al. 2019).

Backward uses a plastic ``B`` (a parameter shaped like ``W``, initialised like ``fa``'s).
``B`` receives the same gradient as ``W`` (``dB = dW``; the autograd Function returns
the local weight gradient for it), so the optimizer gives it the same update, momentum
and weight decay, and DDP all-reduces it like ``W``. With ``decay`` > 0,
:meth:`after_step` shrinks both, ``W <- (1-decay) W``, ``B <- (1-decay) B``, so
``W - B`` falls as ``(1-decay)^t`` (Akrout et al.'s eqs. 16-17: the same ``lambda`` on both,
not scaled by the learning rate) and ``B`` aligns with ``W`` whatever the optimizer's
weight decay.

Default ``decay = 1e-4`` per step: the weight decay of the ImageNet recipe Akrout et al.
compare against (Xiao et al. 2018: SGD, weight decay 1e-4), read as eq. 17's per-step
``lambda``; ``W - B`` halves every 6,900 steps (about 1.4 epochs of ImageNet at batch 256).
Akrout's released toy code defaults to no decay (factor 1), which with weight decay 0 leaves
``B`` unaligned. The decay also shrinks ``W``: compare with BP given the same extra decay.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import DecayingFeedback, draw_normal, init_scale


@register_rule("kp")
class KP(DecayingFeedback):
    """``grad_input = grad_output @ B``, ``dB = dW``; ``params``: ``decay``."""

    defaults = {"decay": 1e-4}
    plastic = True

    def init_feedback(self, generator: torch.Generator, decay: float) -> None:
        b = draw_normal(self.weight.shape, generator, self.weight, init_scale(self.weight))
        self.feedback = nn.Parameter(b)
        self.decay = float(decay)

    def backward_weight(self) -> Tensor:
        return self.feedback
