"""What ``python -m trainers.reproductions.reproduce`` runs, as data: the rules, depths, conv ladders and
learning-rate grid of each reproduction sweep. The runner (:mod:`trainers.reproductions.reproduce`) and
the page's text (:mod:`trainers.reproductions.results_text`) both read it, so neither imports the other's
internals. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainers.catalogue import RULES

DIGITS_RULES = ["bp", "fa", "ss", "usf", "frsf", "kp", "wm", "pfa", "dfa", "sa", "ia", "aa"]
DEPTHS = [2, 6, 10]
CONV_RULES = ["bp", "fa", "ss", "kp", "sa", "ia"]
CONV_BLOCKS = [1, 3]  # ResNet-8, ResNet-20
LR_GRID = [0.005, 0.015, 0.05, 0.15, 0.45]  # a factor of 3 apart, BP's 0.05 in the middle
BREAKING_SWEEPS = ("breaking-mlp", "breaking-conv")  # where each rule breaks (every rule)
SWEEPS = ("digits-mlp", "digits-bp-decay", "digits-lr-search", "conv-synthetic", *BREAKING_SWEEPS)
# sweeps whose settings are Tune samples, not grid points
SEARCHED = {"digits-lr-search", *BREAKING_SWEEPS}
WHOLE = {"conv-synthetic", *BREAKING_SWEEPS}  # run as one job (one parent run), never split

#: The breaking-point study's grids: the digits MLP over depth (hidden layers) x width
#: (units per layer), the conv ladder over ResNet blocks per stage, and the learning rates
#: each grid point's ASHA search tries (per rule: each rule at its own best rate).
BREAKING_GRIDS = {
    "full": {
        "depths": [2, 4, 6, 8, 10, 12],
        "widths": [32, 64, 128, 256, 512],
        "blocks": [1, 2, 3, 4, 5],
        "lrs": LR_GRID,
    },
    # a 2-core machine (--parallel 2): 15 rules x (4 MLP corners + 2 ResNets) x 2 rates =
    # 180 trials, about an hour (each trial pays a setting's start-up, issue 24); the two
    # rates the digits learning-rate search found best for most rules (docs/results.md)
    "reduced": {
        "depths": [2, 12],
        "widths": [32, 256],
        "blocks": [1, 3],
        "lrs": [0.015, 0.05],
    },
}
BREAKING_GAP = 5.0  # points of val accuracy behind BP that count as "broken"


def extra_decays(names: Sequence[str]) -> list[float]:
    """The distinct non-zero default ``decay`` of the rules ``names`` (kp: 1e-4)."""
    defaults = [RULES[n].params.get("decay") for n in names]
    return sorted({float(p.default) for p in defaults if p is not None} - {0.0})
