"""Helpers for data_pipelines tests: tiny real JPEG folders whose pixels encode (class, index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_pipelines.folder import IMAGENET_MEAN, IMAGENET_STD

ID_SIZE = 24


def id_colour(c: int, i: int) -> tuple[int, int, int]:
    """Solid colour of image ``i`` of class ``c``: R encodes the class, G the index."""
    return (20 + 60 * c, 10 + 12 * i, 128)


def write_id_folder(root: Path, *, classes: int, per_class: dict[str, int]) -> Path:
    for split, n in per_class.items():
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.zeros((ID_SIZE, ID_SIZE + 6, 3), np.uint8) + np.array(
                    id_colour(c, i), np.uint8
                )
                Image.fromarray(img).save(folder / f"img_{i:03d}.JPEG", quality=95)
    return root


def decode_ids(images: torch.Tensor) -> list[tuple[int, int]]:
    """Recover (class, index) from normalized solid-colour images (B, 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pix = (images * std + mean) * 255.0
    rgb = pix.mean(dim=(2, 3))
    return [(round((r - 20) / 60), round((g - 10) / 12)) for r, g, _ in rgb.tolist()]
