"""Shared checks of ``data.augment`` for the CPU, GPU and packed-shard pipelines: lossless
PNG noise images, so every train sample can be matched pixel for pixel with the transform
it claims (a shift by the CIFAR crop, a flip, or nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_pipelines.folder import IMAGENET_MEAN, IMAGENET_STD

SIZE = 16
PAD = 4


def write_noise_folder(root: Path, *, classes: int = 2, per_class: int = 6) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: uniform noise, SIZE x SIZE, lossless."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def originals(root: Path) -> list[torch.Tensor]:
    """Every train image as raw 0..255 float CHW tensors."""
    out = []
    for path in sorted((root / "train").glob("*/*.png")):
        out.append(torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float())
    return out


def raw(images: torch.Tensor) -> torch.Tensor:
    """Undo the loader's normalization: back to 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return images.float().cpu() * std + mean


def cifar_candidates(img: torch.Tensor) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every (dx, dy, flipped, view) the pad-4 random crop plus flip can produce."""
    padded = torch.nn.functional.pad(img, (PAD, PAD, PAD, PAD))
    out = []
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            view = padded[:, dy : dy + SIZE, dx : dx + SIZE]
            out += [(dx - PAD, dy - PAD, False, view), (dx - PAD, dy - PAD, True, view.flip(-1))]
    return out


def match(sample: torch.Tensor, images: list[torch.Tensor], candidates) -> tuple | None:
    """The first (image index, transform) that reproduces ``sample`` within 1 grey level."""
    for k, img in enumerate(images):
        for dx, dy, flip, view in candidates(img):
            if (view - sample).abs().max() <= 1.0:
                return k, dx, dy, flip
    return None
