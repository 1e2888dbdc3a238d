"""``wm``: weight mirrors (Akrout, Wilson, Humphreys, Lillicrap, Tweed 2019).

Backward uses a plastic buffer ``B`` (initialised like ``fa``'s). In the mirror phase,
run by :meth:`after_step` every ``mirror_every`` optimizer steps for ``mirror_steps``
iterations, the layer is driven with zero-mean noise ``x ~ N(0, sigma^2)`` and ``B``
learns by the Hebbian product of the layer's input and its (linear) response
``y = W x``:  ``B <- (1 - eta_t) B + eta_t * y x^T / (N sigma^2)`` (Akrout et al.'s
``dB = eta x y^T - lambda B`` with ``lambda = eta``). Since ``E[y x^T] = sigma^2 W``
(Akrout's eq. 10 for a linear response), ``B`` tracks ``W``. For a Conv2d the noise is one
receptive field per sample and ``y x^T`` is ``conv2d_weight(x, y)``. The noise comes from
a generator seeded by (run seed, layer name, ``mirror_count``): identical on every rank.

Defaults (our setting, chosen from the estimator's variance; Akrout et al.'s ImageNet
mirror settings are not quoted in ``papers.md``): one estimate ``y x^T / (N sigma^2)``
from ``N`` noise samples is ``W S`` with ``S`` the sample covariance, whose error
``||W (S - I)|| / ||W||`` is about ``sqrt(fan_in / N)``; an exponential average with rate
``eta`` keeps about ``N (2 - eta) / eta`` samples, so the steady-state angle to ``W`` is
about ``atan(sqrt(eta / (2 - eta) * fan_in / N))``. With the old fixed ``N = 64``,
``eta = 0.1`` that is 13 degrees at fan-in 64 but 63 at fan-in 4608 (ResNet-18's
layer4). So ``mirror_batch`` defaults to the layer's fan-in (``in_features``, or
``in_channels / groups * k * k``), which makes the angle the same at every width:
``atan(sqrt(eta / (2 - eta)))`` = 5.7 degrees at ``mirror_lr = 0.02``, near Akrout et al.'s
"near-zero" ImageNet angles. The schedule starts as a running mean,
``eta_t = max(mirror_lr, 1 / (t + 1))`` for mirror step ``t``, so the first step replaces
the random initial ``B`` and the angle falls as ``atan(sqrt(1 / t))`` (under 10 degrees by
step 33 at any width) before the exponential average (time constant ``1 / mirror_lr``
steps) lets ``B`` follow a moving ``W``. Cost per mirror step: two products of
``N x fan_in x fan_out``: for all of ResNet-18 81 GMAC, against about 1,400 GMAC for
one training step at batch 256 (6 %).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, draw_normal, init_scale, layer_seed


class MirrorSchedule(NamedTuple):
    """When and how ``B`` mirrors ``W``: every ``every`` optimizer steps, ``steps`` mirror
    iterations, each on ``batch`` noise samples of std ``sigma``, at rate
    ``max(lr, 1 / (t + 1))`` for mirror step ``t``."""

    every: int
    steps: int
    batch: int
    lr: float
    sigma: float


@register_rule("wm")
class WM(FeedbackLayer):
    """Plastic ``B`` learned by weight mirroring; ``params``: mirror schedule and rate."""

    defaults = {
        "mirror_every": 1,
        "mirror_steps": 1,
        "mirror_batch": None,  # None: the layer's fan-in
        "mirror_lr": 0.02,
        "noise_std": 1.0,
    }

    def init_feedback(
        self,
        generator: torch.Generator,
        mirror_every: int,
        mirror_steps: int,
        mirror_batch: int | None,
        mirror_lr: float,
        noise_std: float,
    ) -> None:
        b = draw_normal(self.weight.shape, generator, self.weight, init_scale(self.weight))
        self.register_buffer("feedback", b)
        zero = torch.zeros((), dtype=torch.int64, device=self.weight.device)
        self.register_buffer("mirror_count", zero.clone())
        self.register_buffer("step_count", zero.clone())
        fan_in = math.prod(self.weight.shape[1:])
        if not 0 < float(mirror_lr) <= 1:
            raise ValueError(f"wm mirror_lr must be in (0, 1], got {mirror_lr}")
        self.schedule = MirrorSchedule(
            every=int(mirror_every),
            steps=int(mirror_steps),
            batch=int(mirror_batch) if mirror_batch is not None else fan_in,
            lr=float(mirror_lr),
            sigma=float(noise_std),
        )

    def backward_weight(self) -> Tensor:
        return self.feedback

    def after_step(self) -> None:
        step = int(self.step_count)
        self.step_count.fill_(step + 1)
        if (step + 1) % self.schedule.every == 0:
            for _ in range(self.schedule.steps):
                self.mirror()

    @torch.no_grad()
    def mirror(self) -> None:
        """One mirror iteration: a noise batch through ``W``, a Hebbian step on ``B``."""
        batch, rate, sigma = self.schedule.batch, self.schedule.lr, self.schedule.sigma
        count = int(self.mirror_count)
        self.mirror_count.fill_(count + 1)
        lr = max(rate, 1.0 / (count + 1))  # a running mean first, then an exponential one
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
