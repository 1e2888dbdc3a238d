"""The rule registry: rule name -> rule class, filled by :func:`register_rule`.

A rule class is a mixin over :class:`~trainers.rules.base.FeedbackLayer`; registering it
builds its two concrete layer types, ``Rule.Linear`` (an ``nn.Linear``) and ``Rule.Conv2d``
(an ``nn.Conv2d``), so adding a rule is one module plus one decorator.
"""

from __future__ import annotations

from collections.abc import Callable

from trainers import catalogue
from trainers.names import check_name
from trainers.rules.base import FeedbackConv2d, FeedbackLayer, FeedbackLinear

__all__ = ["RULES", "get_rule", "register_rule"]

RULES: dict[str, type[FeedbackLayer]] = {}


def register_rule(name: str) -> Callable[[type[FeedbackLayer]], type[FeedbackLayer]]:
    """Class decorator: register a rule mixin under ``name`` (refuses duplicates and names
    missing from the catalogue, ``trainers.catalogue.RULES``)."""
    check_name("rule", name, catalogue.RULES)

    def deco(cls: type[FeedbackLayer]) -> type[FeedbackLayer]:
        if name in RULES:
            raise ValueError(f"rule {name!r} is already registered ({RULES[name].__qualname__})")
        cls.rule_name = name
        for attr, base in (("Linear", FeedbackLinear), ("Conv2d", FeedbackConv2d)):
            layer_cls = type(
                f"{cls.__name__}{attr}",
                (cls, base),
                {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.{attr}"},
            )
            setattr(cls, attr, layer_cls)
        RULES[name] = cls
        return cls

    return deco


def get_rule(name: str) -> type[FeedbackLayer]:
    """The rule class registered as ``name``; ValueError naming the valid rules otherwise."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; valid rules: {', '.join(RULES)}") from None
