"""``wm``: weight mirrors (Akrout, Wilson, Humphreys, Lillicrap, Tweed 2019).

Backward uses a plastic buffer ``B`` (initialised like ``fa``'s). Akrout et al. alternate
an engaged (learning) mode with a mirror mode; here :meth:`after_step` runs a mirror phase
after optimizer steps 1, 1 + K, 1 + 2K, ... (``K = mirror_every``), each of
``mirror_steps`` iterations. One iteration drives the layer with zero-mean noise
``x ~ N(0, sigma^2)`` and ``B`` learns by the Hebbian product of the layer's input and its
(linear) response ``y = W x``:  ``B <- (1 - eta) B + eta * sum(y x^T) / (N sigma^2)`` over
``N = mirror_batch`` noise samples (Akrout et al.'s ``dB = eta x y^T - lambda B`` with
``lambda = eta``). Since ``E[y x^T] = sigma^2 W`` (Akrout's eq. 10 for a linear response),
``B`` tracks ``W``. For a Conv2d the noise is one receptive field per sample (its taps,
``in_channels / groups * k * k`` values per group) and ``y x^T`` the per-group product.

Rate. ``mirror_lr`` is a rate per *optimizer step*: ``B`` forgets old estimates as
``(1 - mirror_lr)^t`` after ``t`` training steps, a time constant of ``1 / mirror_lr`` steps
(``global batch / mirror_lr`` training samples) whatever ``K``. Each of the phase's
iterations therefore uses ``eta = 1 - (1 - mirror_lr)^(K / mirror_steps)``. A phase starts
as a running mean, ``eta_t = max(eta, 1 / (t + 1))`` for iteration ``t``, so the first
replaces the random initial ``B``.

DDP. The ``N`` noise samples of an iteration are split over the ranks: rank ``r`` of ``R``
draws ``N // R`` (one more for ``r < N % R``) from a generator seeded by (run seed, layer
name, iteration, ``r``), sums its ``y x^T``, and one all-reduce adds the ranks' sums, so
every rank applies the same estimate of ``N`` samples to the same ``B`` at ``1 / R`` of the
work (plus one all-reduce of ``B``'s size per iteration, ``1 / K`` of DDP's gradient
traffic). Alone (no process group) the layer draws all ``N``.

Defaults, from the estimator's variance (Akrout et al.'s ImageNet mirror settings are not
quoted in ``papers.md``). One estimate from ``N`` samples is ``W S`` with ``S`` the sample
covariance, error ``||W (S - I)|| / ||W||`` about ``sqrt(fan_in / N)``; an exponential
average with rate ``eta`` keeps about ``N (2 - eta) / eta`` samples, so with ``W`` fixed the
steady-state angle to ``W`` is about ``atan(sqrt(eta / (2 - eta) * fan_in / N))``. With
``eta ~ K mirror_lr``: ``tan^2(angle) ~ fan_in / (2 tau n)``, ``tau = 1 / mirror_lr`` and
``n = N / K`` the noise samples per optimizer step, which set the cost. ``mirror_batch``
defaults to the fan-in (the angle is then the same at every width), ``K = 4`` and
``mirror_lr = 0.01`` (``tau`` = 100 steps): ``eta = 0.039``, 8.1 degrees, against 5.7 for the
former one phase per step at rate 0.02 (``tau`` = 50 steps), at an eighth of its noise per
step. From a random ``B`` the angle falls as ``atan(sqrt(1 / t))`` over the first
iterations (under 10 degrees after about 33 phases, 130 steps, at any width). Cost per
phase: two products of ``N x fan_in x fan_out``, for all of ResNet-18 81 GMAC, so
``81 / (K R)`` GMAC per step and rank: 2.5 at ``K = 4`` on 8 ranks, against 175 GMAC for a
training step of 32 images at 224 px (1.4 %). ``docs/benchmarks.md`` has the measured
trade-off.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from trainers.rules._registry import register_rule
from trainers.rules.base import FeedbackLayer, draw_normal, init_scale, layer_seed

__all__ = ["WM", "MirrorSchedule", "rank_share"]


class MirrorSchedule(NamedTuple):
    """When and how ``B`` mirrors ``W``: after every ``every``-th optimizer step,
    ``steps`` iterations, each on ``batch`` noise samples (over all ranks) of std ``sigma``,
    at rate ``max(lr, 1 / (t + 1))`` for iteration ``t`` (``lr`` per iteration)."""

    every: int
    steps: int
    batch: int
    lr: float
    sigma: float


def rank_share(n: int, rank: int, world: int) -> int:
    """How many of ``n`` samples rank ``rank`` of ``world`` draws (the shares sum to ``n``)."""
    return n // world + (1 if rank < n % world else 0)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@register_rule("wm")
class WM(FeedbackLayer):
    """Plastic ``B`` learned by weight mirroring; ``params``: mirror schedule and rate."""

    defaults = {
        "mirror_every": 4,
        "mirror_steps": 1,
        "mirror_batch": None,  # None: the layer's fan-in
        "mirror_lr": 0.01,  # per optimizer step
        "noise_std": 1.0,
    }
    # rank and world size of the mirror's noise share; None: torch.distributed's (or 0, 1).
    # Set by a benchmark that times one rank's share of a DDP job in a single process.
    mirror_shard: tuple[int, int] | None = None

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
        for name, value in (("mirror_every", mirror_every), ("mirror_steps", mirror_steps)):
            if int(value) < 1:
                raise ValueError(f"wm {name} must be at least 1, got {value}")
        if mirror_batch is not None and int(mirror_batch) < 1:
            raise ValueError(f"wm mirror_batch must be at least 1, got {mirror_batch}")
        every, steps = int(mirror_every), int(mirror_steps)
        self.schedule = MirrorSchedule(
            every=every,
            steps=steps,
            batch=int(mirror_batch) if mirror_batch is not None else fan_in,
            lr=1.0 - (1.0 - float(mirror_lr)) ** (every / steps),
            sigma=float(noise_std),
        )

    def backward_weight(self) -> Tensor:
        return self.feedback

    def after_step(self) -> None:
        step = int(self.step_count)
        self.step_count.fill_(step + 1)
        if step % self.schedule.every == 0:
            for _ in range(self.schedule.steps):
                self.mirror()

    @torch.no_grad()
    def mirror(self) -> None:
        """One mirror iteration: this rank's share of the noise through ``W``, the ranks'
        Hebbian sums added by one all-reduce, one step of ``B`` towards their mean."""
        batch, sigma = self.schedule.batch, self.schedule.sigma
        count = int(self.mirror_count)
        self.mirror_count.fill_(count + 1)
        rank, world = self.mirror_shard or _rank_and_world()
        tag = f"wm{count}" if world == 1 else f"wm{count}/{rank}"
        hebb = self.hebbian_sum(rank_share(batch, rank, world), layer_seed(self.rule_seed, tag))
        if world > 1 and self.mirror_shard is None:
            dist.all_reduce(hebb)
        lr = max(self.schedule.lr, 1.0 / (count + 1))  # a running mean first, then exponential
        self.feedback.mul_(1.0 - lr).add_(hebb, alpha=lr / (batch * sigma**2))

    def hebbian_sum(self, n: int, seed: int) -> Tensor:
        """``sum_i y_i x_i^T`` over ``n`` noise samples ``x_i ~ N(0, sigma^2)`` (one receptive
        field of the layer each) and its responses ``y_i = W x_i``, shaped like ``W``."""
        w = self.weight.detach()
        groups = self.groups if isinstance(self, nn.Conv2d) else 1
        wg = w.reshape(groups, w.shape[0] // groups, -1)  # (groups, out/groups, fan_in)
        if n == 0:
            return torch.zeros_like(w)
        gen = torch.Generator(device=w.device).manual_seed(seed)
        x = torch.randn((groups, n, wg.shape[2]), generator=gen, device=w.device, dtype=w.dtype)
        x.mul_(self.schedule.sigma)
        y = torch.bmm(x, wg.transpose(1, 2))  # (groups, n, out/groups)
        return torch.bmm(y.transpose(1, 2), x).reshape(w.shape)
