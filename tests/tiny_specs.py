"""The smallest specs the Ray tests train (imported by test modules; not a conftest,
whose name is shared by several folders)."""

from __future__ import annotations

# The smallest data that still trains: 3 classes of 24 px crops from 28 px JPEG files.
TINY_DATA = {
    "kind": "synthetic",
    "image_size": 24,
    "synth": {"classes": 3, "train_per_class": 16, "val_per_class": 8, "size": 28},
}


def tiny_spec(**fields) -> dict:
    """A spec dict on ``TINY_DATA`` with a small conv net; ``fields`` override top-level keys."""
    import copy

    return {
        "model": "convnet",
        "data": copy.deepcopy(TINY_DATA),
        "batch_size": 16,
        **fields,
    }


# A grid of 10^10 settings over five real sweep axes of 100 values each: what a spec can ask
# for, which must be counted and refused (or walked) without being built.
HUNDRED = [i / 100 for i in range(1, 101)]
HUGE_GRID = {
    "model": "mlp",
    "rule": {"name": "sc", "params": {"p": HUNDRED}},
    "model_params": {"hidden": list(range(1, 101)), "depth": list(range(1, 101))},
    "optim": {"lr": HUNDRED},
    "seed": list(range(100)),
}
HUGE_GRID_AXES = ("rule.params.p", "model_params.hidden", "model_params.depth", "optim.lr", "seed")
