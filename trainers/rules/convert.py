"""Model surgery: swap every ``nn.Linear``/``nn.Conv2d`` of a model for a rule's layer."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from torch import nn

from trainers.rules._registry import get_rule

__all__ = ["convert"]

log = logging.getLogger(__name__)


def _last_linear(model: nn.Module) -> str | None:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def convert(
    model: nn.Module,
    rule: str,
    *,
    last_layer: str | None = None,
    seed: int = 0,
    **params: Any,
) -> tuple[nn.Module, dict[str, int]]:
    """Replace every ``nn.Linear``/``nn.Conv2d`` of ``model`` by ``rule``'s layer, in place.

    Weights and biases are kept (the same Parameters). ``last_layer="bp"`` puts the last
    ``nn.Linear`` (the classifier) on exact backprop. Each layer's feedback is seeded from
    ``seed`` and the layer's qualified name, so layers differ and every rank agrees.
    ``params`` go to the rule (unknown names raise ``ValueError``).

    Returns ``(model, counts)``, counts like ``{"Linear": n, "Conv2d": m}``: the layers now
    on ``rule`` (a classifier kept on BP is not counted).
    """
    rule_cls = get_rule(rule)
    rule_cls.check_params(params)
    if last_layer not in (None, "bp"):
        raise ValueError(f"last_layer must be None or 'bp', got {last_layer!r}")
    bp_cls = get_rule("bp")
    keep = _last_linear(model) if last_layer == "bp" else None
    if last_layer == "bp" and keep is None:
        log.warning("last_layer='bp' but the model has no nn.Linear; nothing kept on BP")
    counts: Counter[str] = Counter()
    hooks = getattr(rule_cls, "convert_hook", None)

    def walk(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if isinstance(child, nn.Linear | nn.Conv2d):
                kind = "Linear" if isinstance(child, nn.Linear) else "Conv2d"
                if name == keep:
                    new = bp_cls.from_layer(child, seed=seed, name=name)
                else:
                    new = rule_cls.from_layer(child, seed=seed, name=name, **params)
                    counts[kind] += 1
                setattr(module, child_name, new)
            else:
                walk(child, f"{name}.")

    if isinstance(model, nn.Linear | nn.Conv2d):  # a bare layer: it is its own classifier
        kind = "Linear" if isinstance(model, nn.Linear) else "Conv2d"
        if keep == "":
            return bp_cls.from_layer(model, seed=seed), {"Linear": 0, "Conv2d": 0}
        layer = rule_cls.from_layer(model, seed=seed, **params)
        if hooks is not None:
            hooks(layer, last="" if kind == "Linear" else None)
        return layer, {"Linear": int(kind == "Linear"), "Conv2d": int(kind == "Conv2d")}
    walk(model, "")
    if hooks is not None:
        hooks(model, last=_last_linear(model))
    return model, {"Linear": counts["Linear"], "Conv2d": counts["Conv2d"]}
