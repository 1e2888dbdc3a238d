"""Feedback-rule library: credit-assignment rules as drop-in ``nn.Linear``/``nn.Conv2d`` layers.

Public names:

- ``RULES``: rule name -> rule class (``bp fa dfa ss usf brsf frsf sc kp wm pfa pfa_o sa ia aa``).
  ``RULES[name].Linear`` / ``.Conv2d`` are the layer types; every rule layer subclasses
  ``nn.Linear``/``nn.Conv2d`` and has ``backward_weight()`` (the tensor standing where BP
  uses ``W``). The math of each rule is in its module's docstring and in
  ``docs/papers.md``.
- ``register_rule(name)``: class decorator adding a rule (refuses duplicates).
- ``convert(model, rule, *, last_layer=None, seed=0, **params) -> (model, counts)``.
- ``after_step(model)``: the per-step hook. **Call it once after every
  ``optimizer.step()``** (on the unwrapped or DDP-wrapped model, on every rank). It runs each
  layer's plastic-feedback update that is not a gradient step: Kolen-Pollack's and PFA's
  ``decay``, the weight-mirror phase of ``wm``. Updates that are gradient steps (``kp``'s
  ``B``, ``pfa``'s path ``B^T R^T``) happen inside ``optimizer.step()``: they are
  parameters whose gradient DDP all-reduces like any other, so every rank stays identical.
  Random draws come from generators seeded by (seed, layer name, step counter): ``brsf``'s
  per-batch magnitudes are identical on every rank; ``wm``'s mirror noise is split over the
  ranks (each seeds its share by its rank too) and one all-reduce sums the estimates.
- ``param_groups(model)``: the model's parameters as optimizer groups. Build the optimizer
  from it: the learned-feedback rules (``sa ia aa``) put their ``B`` in a group of its own
  (no weight decay, ``feedback_lr`` when set); for every other rule it is one group.
- ``exact_backprop(model)``: context manager running every rule layer as exact BP.
- ``feedback_layers(model)``: ``(name, layer)`` for every rule layer (DDP unwrapped).
- ``BatchManhattan``: see :mod:`trainers.optim`.

Feedback state lives in the state_dict (buffers for fixed feedback, parameters for
plastic feedback), so checkpoints, resumed runs and DDP's broadcast all agree. A BP
state_dict loads into a converted model (missing feedback keys keep their seeded values).
"""

from __future__ import annotations

import torch
from torch import nn

# rule modules register themselves on import
from trainers.optim import BatchManhattan
from trainers.rules import bp, brsf, dfa, fa, frsf, kp, learned, pfa, sc, ss, usf, wm  # noqa: F401
from trainers.rules._registry import RULES, get_rule, register_rule
from trainers.rules.base import (
    FeedbackConv2d,
    FeedbackLayer,
    FeedbackLinear,
    exact_backprop,
    feedback_layers,
    unwrap,
)
from trainers.rules.convert import convert

__all__ = [
    "RULES",
    "BatchManhattan",
    "FeedbackConv2d",
    "FeedbackLayer",
    "FeedbackLinear",
    "after_step",
    "convert",
    "exact_backprop",
    "feedback_layers",
    "get_rule",
    "param_groups",
    "register_rule",
    "unwrap",
]


def after_step(model: nn.Module) -> None:
    """Run every rule layer's per-step update; call once after each ``optimizer.step()``."""
    with torch.no_grad():
        for _, layer in feedback_layers(model):
            layer.after_step()


def param_groups(model: nn.Module) -> list[dict]:
    """``model``'s parameters as optimizer param groups: first every parameter no rule layer
    claims (the optimizer's defaults), then one group per distinct option set a rule layer's
    ``optimizer_group()`` asks for (``sa ia aa``: their ``B``, weight decay 0 and their
    ``feedback_lr``). A model without such layers gives one group, as before."""
    claimed: dict[tuple, list[nn.Parameter]] = {}
    ids: set[int] = set()
    for _, layer in feedback_layers(model):
        group = getattr(layer, "optimizer_group", None)
        if group is None:
            continue
        params, options = group()
        claimed.setdefault(tuple(sorted(options.items())), []).extend(params)
        ids.update(id(p) for p in params)
    rest = [p for p in unwrap(model).parameters() if id(p) not in ids]
    return [{"params": rest}] + [
        {"params": params, **dict(options)} for options, params in claimed.items()
    ]
