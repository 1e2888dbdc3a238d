"""Optimizers from the spec's ``optim`` section, and Batch Manhattan (Liao, Leibo, Poggio 2016).

Batch Manhattan: the optimizer's own step sees each parameter's batch gradient replaced by
its sign (``p.grad`` itself is left as it was), so weight decay and momentum compose as usual on top of it:
``v <- mu v + (sign(g) + wd w)``, ``w <- w - lr v`` for SGD.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from trainers.names import OPTIMIZER_NAMES, check_name
from trainers.spec import OptimSpec

__all__ = ["OPTIMIZERS", "BatchManhattan", "build_optimizer", "register_optimizer"]

OPTIMIZERS: dict[str, Callable[[Iterable[Tensor], OptimSpec], torch.optim.Optimizer]] = {}


def register_optimizer(name: str):
    """Decorator: register an optimizer builder ``(params, spec) -> Optimizer`` (refuses
    duplicates and names missing from ``trainers.names.OPTIMIZER_NAMES``)."""
    check_name("optimizer", name, OPTIMIZER_NAMES)

    def deco(fn):
        if name in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} is already registered")
        OPTIMIZERS[name] = fn
        return fn

    return deco


@register_optimizer("sgd")
def _sgd(params: Iterable[Tensor], spec: OptimSpec) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )


@register_optimizer("adam")
def _adam(params: Iterable[Tensor], spec: OptimSpec) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _sign_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook: stand ``sign(g)`` in for each gradient ``g``, keeping ``g`` aside."""
    kept = optimizer._manhattan_kept  # type: ignore[attr-defined]
    kept.clear()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                kept.append((p, p.grad))
                p.grad = torch.sign(p.grad)


def _restore_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Step post-hook: put the true gradients back where the signs stood."""
    kept = optimizer._manhattan_kept  # type: ignore[attr-defined]
    for p, grad in kept:
        p.grad = grad
    kept.clear()


def BatchManhattan(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:  # noqa: N802
    """Make ``optimizer`` step by the sign of each gradient (Batch Manhattan); returns it.

    Implemented as a step pre-hook that hands the optimizer ``sign(g)`` and a post-hook
    that puts ``g`` back, so after ``step()`` every ``p.grad`` is the true gradient again
    (clipping logs, gradient alignment and user hooks read real gradients), and the result
    is still the same ``Optimizer`` (LR schedulers, ``state_dict`` and checkpoints work
    unchanged). Idempotent.
    """
    if not getattr(optimizer, "batch_manhattan", False):
        optimizer._manhattan_kept = []  # type: ignore[attr-defined]
        optimizer.register_step_pre_hook(_sign_gradients)
        optimizer.register_step_post_hook(_restore_gradients)
        optimizer.batch_manhattan = True
    return optimizer


def build_optimizer(params: Iterable[Tensor], spec: OptimSpec) -> torch.optim.Optimizer:
    """The optimizer named by ``spec.name`` with its lr, momentum, weight decay, Manhattan flag.

    ``params``: parameters, or param groups (``trainers.rules.param_groups``) whose own
    options override the spec's."""
    try:
        builder = OPTIMIZERS[spec.name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {spec.name!r}; valid: {', '.join(OPTIMIZERS)}"
        ) from None
    optimizer = builder(params, spec)
    return BatchManhattan(optimizer) if spec.manhattan else optimizer
