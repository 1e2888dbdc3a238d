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
