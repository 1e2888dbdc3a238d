"""``wm``: weight mirrors (Akrout, Wilson, Humphreys, Lillicrap, Tweed 2019).

Backward uses a plastic buffer ``B`` (initialised like ``fa``'s). In the mirror phase,
run by :meth:`after_step` every ``mirror_every`` optimizer steps for ``mirror_steps``
iterations, the layer is driven with zero-mean noise ``x ~ N(0, sigma^2)`` and ``B``
learns by the Hebbian product of the layer's input and its (linear) response
``y = W x``:  ``B <- (1 - mirror_lr) B + mirror_lr * y x^T / (N sigma^2)``. Since
``E[y x^T] = sigma^2 W``, ``B`` tracks ``W``. For a Conv2d the noise is one receptive
field per sample and ``y x^T`` is ``conv2d_weight(x, y)``. The noise comes from a
generator seeded by (run seed, layer name, ``mirror_count``): identical on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, draw_normal, init_scale, layer_seed


@register_rule("wm")
class WM(FeedbackLayer):
    """Plastic ``B`` learned by weight mirroring; ``params``: mirror schedule and rate."""

    defaults = {
        "mirror_every": 1,
        "mirror_steps": 1,
        "mirror_batch": 64,
        "mirror_lr": 0.1,
        "noise_std": 1.0,
    }

    def init_feedback(
        self,
        generator: torch.Generator,
        mirror_every: int,
        mirror_steps: int,
        mirror_batch: int,
        mirror_lr: float,
        noise_std: float,
    ) -> None:
        b = draw_normal(self.weight.shape, generator, self.weight, init_scale(self.weight))
        self.register_buffer("feedback", b)
        zero = torch.zeros((), dtype=torch.int64, device=self.weight.device)
        self.register_buffer("mirror_count", zero.clone())
        self.register_buffer("step_count", zero.clone())
        self.schedule = (
            int(mirror_every),
            int(mirror_steps),
            int(mirror_batch),
            float(mirror_lr),
            float(noise_std),
        )

    def backward_weight(self) -> Tensor:
        return self.feedback

    def after_step(self) -> None:
        every, steps = self.schedule[:2]
        step = int(self.step_count)
        self.step_count.fill_(step + 1)
        if (step + 1) % every == 0:
            for _ in range(steps):
                self.mirror()

    @torch.no_grad()
    def mirror(self) -> None:
        """One mirror iteration: a noise batch through ``W``, a Hebbian step on ``B``."""
        _, _, batch, lr, sigma = self.schedule
        count = int(self.mirror_count)
        self.mirror_count.fill_(count + 1)
        w = self.weight.detach()
        gen = torch.Generator(device=w.device).manual_seed(layer_seed(self.rule_seed, f"wm{count}"))
        if isinstance(self, nn.Conv2d):
            ext = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            shape = (batch, self.in_channels, *ext)
        else:
            shape = (batch, self.in_features)
        x = torch.randn(shape, generator=gen, device=w.device, dtype=w.dtype) * sigma
        if isinstance(self, nn.Conv2d):
            y = F.conv2d(x, w, None, 1, 0, self.dilation, self.groups)
            hebb = torch.nn.grad.conv2d_weight(x, w.shape, y, 1, 0, self.dilation, self.groups)
        else:
            hebb = (x @ w.t()).t() @ x
        self.feedback.mul_(1.0 - lr).add_(hebb, alpha=lr / (batch * sigma**2))
