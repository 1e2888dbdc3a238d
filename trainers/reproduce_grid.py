"""What ``python -m trainers.reproduce`` runs, as data: the rules, depths, conv ladders and
learning-rate grid of each reproduction sweep. The runner (:mod:`trainers.reproduce`) and
the page's text (:mod:`trainers.results_text`) both read it, so neither imports the other's
internals. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainers.catalogue import RULES

DIGITS_RULES = ["bp", "fa", "ss", "usf", "frsf", "kp", "wm", "pfa", "dfa"]
DEPTHS = [2, 6, 10]
CONV_RULES = ["bp", "fa", "ss", "kp"]
CONV_BLOCKS = [1, 3]  # ResNet-8, ResNet-20
LR_GRID = [0.005, 0.015, 0.05, 0.15, 0.45]  # a factor of 3 apart, BP's 0.05 in the middle
SWEEPS = ("digits-mlp", "digits-bp-decay", "digits-lr-search", "conv-synthetic")
SEARCHED = {"digits-lr-search"}  # sweeps whose settings are Tune samples, not grid points


def extra_decays(names: Sequence[str]) -> list[float]:
    """The distinct non-zero default ``decay`` of the rules ``names`` (kp: 1e-4)."""
    defaults = [RULES[n].params.get("decay") for n in names]
    return sorted({float(p.default) for p in defaults if p is not None} - {0.0})
