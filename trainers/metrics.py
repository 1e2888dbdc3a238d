"""Alignment metrics for feedback rules (Lillicrap 2016, Xiao 2018, Akrout 2019, Ji-An & Benna).

- :func:`alignment`: per rule layer, the angle in degrees between ``vec(W)`` and
  ``vec(backward_weight())`` (for ``pfa`` this is the path alignment between ``W`` and
  ``(R B)^T``), the norm ratio ``||B|| / ||W||``, sign concordance, and ``W``'s excess
  kurtosis, mean and std; plus ``mean_*`` over layers.
- :func:`gradient_alignment`: per layer, the angle between the rule's weight gradient and
  exact BP's on the same batch, both passes in one declared mode (``eval`` by default:
  BatchNorm running statistics, no dropout; the training loops log it as ``galign_*``
  and record the mode as the run's ``tracking.alignment_mode`` param).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from trainers.rules.base import exact_backprop, feedback_layers, unwrap

__all__ = ["PROBE_MODES", "alignment", "angle", "gradient_alignment", "kurtosis"]


def angle(a: Tensor, b: Tensor) -> float:
    """Degrees between ``vec(a)`` and ``vec(b)`` (nan if either is zero)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    denom = float(a.norm() * b.norm())
    if denom == 0:
        return math.nan
    cos = max(-1.0, min(1.0, float(a @ b) / denom))
    return math.degrees(math.acos(cos))


def kurtosis(w: Tensor) -> float:
    """Excess kurtosis ``E[(w-mu)^4] / var^2 - 3`` of the entries of ``w``."""
    w = w.detach().double().flatten()
    c = w - w.mean()
    var = float((c * c).mean())
    return float((c**4).mean()) / var**2 - 3.0 if var > 0 else math.nan


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def alignment(model: nn.Module) -> dict[str, float]:
    """Weight alignment of every rule layer of ``model`` (a DDP-wrapped model works too).

    Keys: ``{name}.angle``, ``{name}.norm_ratio``, ``{name}.sign_concordance``,
    ``{name}.kurtosis``, ``{name}.mean``, ``{name}.std`` per layer, and ``mean_angle``,
    ``mean_norm_ratio``, ``mean_sign_concordance``, ``mean_kurtosis``. The means skip
    layers kept on exact BP (angle 0 by construction) unless every layer is BP. Layers of
    rules without a backward matrix (``dfa``) report only the weight statistics.
    """
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {
        "angle": [],
        "norm_ratio": [],
        "sign_concordance": [],
        "kurtosis": [],
    }
    layers = list(feedback_layers(model))
    all_bp = all(layer.rule_name == "bp" for _, layer in layers)
    for name, layer in layers:
        w = layer.weight.detach()
        stats = {
            "kurtosis": kurtosis(w),
            "mean": float(w.double().mean()),
            "std": float(w.double().std()) if w.numel() > 1 else 0.0,
        }
        if layer.has_backward_weight:
            with torch.no_grad():
                b = layer.backward_weight().detach()
            wn = float(w.double().norm())
            stats["angle"] = angle(w, b)
            stats["norm_ratio"] = float(b.double().norm()) / wn if wn > 0 else math.nan
            stats["sign_concordance"] = float((torch.sign(w) == torch.sign(b)).double().mean())
        for key, value in stats.items():
            out[f"{name}.{key}"] = value
        if all_bp or layer.rule_name != "bp":
            for key in per:
                if key in stats:
                    per[key].append(stats[key])
    for key, values in per.items():
        out[f"mean_{key}"] = _mean(values)
    return out


def _weight_grads(model: nn.Module) -> dict[str, Tensor]:
    return {
        name: layer.weight.grad.detach().clone()
        for name, layer in feedback_layers(model)
        if layer.weight.grad is not None
    }


PROBE_MODES = ("eval", "train")


def _set_mode(net: nn.Module, mode: str) -> dict[nn.Module, bool]:
    """Put every module of ``net`` in ``mode``; returns each module's previous flag."""
    saved = {m: m.training for m in net.modules()}
    net.train(mode == "train")
    return saved


def gradient_alignment(
    model: nn.Module,
    batch: tuple[Any, Any],
    loss_fn: Callable[[Any, Any], Tensor],
    *,
    mode: str = "eval",
) -> dict[str, float]:
    """Angle (degrees) between each layer's rule weight gradient and exact BP's on ``batch``.

    ``batch`` is ``(inputs, targets)``; ``loss_fn(outputs, targets)`` gives the loss. Both
    passes run in one declared ``mode``:

    - ``"eval"`` (default): every module in eval mode: BatchNorm uses its running
      statistics, dropout is off; the rule layers still run their own backward (they follow
      grad mode, not the module mode), so the angle measures the rule's feedback alone;
    - ``"train"``: every module in train mode (batch statistics, dropout on); the random
      state is replayed so both passes draw the same dropout masks.

    So a ``bp`` model reports 0 degrees in either mode. Runs on the unwrapped model (no DDP
    all-reduce); gradients, buffers (BatchNorm statistics, rule counters) and every
    module's own train/eval flag are restored afterwards. Keys ``{name}.grad_angle`` and
    ``mean_grad_angle`` (over layers not on BP).
    """
    if mode not in PROBE_MODES:
        raise ValueError(f"mode must be one of {PROBE_MODES}, got {mode!r}")
    net = unwrap(model)
    inputs, targets = batch
    saved_grads = {n: p.grad for n, p in net.named_parameters()}
    saved_buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
    devices = [d for d in {t.device for t in net.parameters()} if d.type == "cuda"]

    def grads(exact: bool) -> dict[str, Tensor]:
        for p in net.parameters():
            p.grad = None
        # the same random stream for both passes: identical dropout masks in train mode
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(0x5EED)
            if exact:
                with exact_backprop(net):
                    loss_fn(net(inputs), targets).backward()
            else:
                loss_fn(net(inputs), targets).backward()
        out = _weight_grads(net)
        with torch.no_grad():
            for n, b in net.named_buffers():
                if n in saved_buffers and saved_buffers[n].shape == b.shape:
                    b.copy_(saved_buffers[n])
        return out

    modes = _set_mode(net, mode)
    try:
        rule = grads(exact=False)
        exact = grads(exact=True)
    finally:
        for module, training in modes.items():
            module.training = training
        for n, p in net.named_parameters():
            p.grad = saved_grads[n]
    rules = dict(feedback_layers(net))
    out = {f"{n}.grad_angle": angle(rule[n], exact[n]) for n in rule if n in exact}
    non_bp = [out[f"{n}.grad_angle"] for n in rule if n in exact and rules[n].rule_name != "bp"]
    out["mean_grad_angle"] = _mean(non_bp if non_bp else list(out.values()))
    return out
