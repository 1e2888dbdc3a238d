"""scikit-learn's bundled handwritten digits (1797 8x8 grey images, 10 classes) as a loader.

No files and no DALI: the images are upsampled (bilinear) to ``image_size`` and repeated
to 3 channels, so the same 3-channel models run on them; pixels (0..16) are scaled to
0..1 and normalized with the whole set's mean and std. The split is fixed: a
seed-0 permutation, the first 80 % train, the rest val. Sharding and step counts follow
the DALI loaders (train: drop the last partial batch, every shard ``(N // S) // B``
steps; val: every sample once, ``ceil(ceil(N / S) / B)`` steps per shard).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from data_pipelines.digits_file import TRAIN_FRACTION, load_digits_arrays

__all__ = ["DigitsLoader", "NUM_CLASSES"]

NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    images, target = load_digits_arrays()
    x = (images / 16.0).astype(np.float32)
    y = target
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 8, 8) in 0..1 and labels (N,) of one split."""
    x, y = _digits()
    cut = int(len(y) * TRAIN_FRACTION)
    return (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])


class DigitsLoader:
    """Sharded, seeded batches of digits ``(float32 [B, 3, S, S], int64 [B])``."""

    def __init__(
        self,
        split: str,
        *,
        image_size: int,
        batch_size: int,
        shard_id: int = 0,
        num_shards: int = 1,
        seed: int = 0,
    ) -> None:
        x, y = digits_split(split)
        all_x, _ = _digits()
        mean, std = float(all_x.mean()), float(all_x.std())
        self.train = split == "train"
        n = len(y)
        # contiguous shards as DALI's readers: shard i = [floor(i*n/S), floor((i+1)*n/S))
        lo, hi = (shard_id * n) // num_shards, ((shard_id + 1) * n) // num_shards
        if self.train:
            # shuffle once globally (same on every rank) so shards mix classes
            order = np.random.default_rng(seed).permutation(n)
            x, y = x[order], y[order]
        self._x = torch.from_numpy((x[lo:hi] - mean) / std)
        self._y = torch.from_numpy(y[lo:hi])
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = seed
        self.shard_id = shard_id
        self._epoch = 0
        if self.train:
            self._len = (n // num_shards) // batch_size
            if self._len == 0:
                raise ValueError(
                    f"digits train shard of {n // num_shards} images is smaller than "
                    f"batch_size {batch_size}"
                )
        else:
            self._len = math.ceil(math.ceil(n / num_shards) / batch_size)

    def __len__(self) -> int:
        return self._len

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        x = self._x[idx].unsqueeze(1)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        return x.expand(-1, 3, -1, -1).contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self._y)
        if self.train:
            g = torch.Generator().manual_seed(
                self.seed * 100_003 + self.shard_id * 1009 + self._epoch
            )
            order = torch.randperm(n, generator=g)
            self._epoch += 1
        else:
            order = torch.arange(n)
        for step in range(self._len):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self._images(idx), self._y[idx]
