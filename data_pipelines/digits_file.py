"""scikit-learn's handwritten digits read from the data file scikit-learn ships
(``sklearn/datasets/data/digits.csv.gz``, what ``sklearn.datasets.load_digits`` parses),
without importing scikit-learn: that import costs about 2 s of every process that trains on
digits or counts them (a driver recording the data section, every Tune trial), for a
1797-row file. Falls back to ``load_digits`` when the file is not where scikit-learn keeps
it. No torch here either: the driver needs only the counts."""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["TRAIN_FRACTION", "load_digits_arrays", "split_size"]

TRAIN_FRACTION = 0.8
DATA_FILE = ("datasets", "data", "digits.csv.gz")


def _data_file() -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    for base in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(base).joinpath(*DATA_FILE)
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) float64 in 0..16, labels (1797,) int64)``, in the file's order:
    the arrays ``load_digits()`` returns as ``images`` and ``target``."""
    path = _data_file()
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target.astype(np.int64)
    with gzip.open(path, "rt") as rows:
        table = np.loadtxt(rows, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def split_size(split: str) -> int:
    """Images in ``split`` ("train": the first 80 % of the permuted set; else the rest)."""
    total = len(load_digits_arrays()[1])
    cut = int(total * TRAIN_FRACTION)
    return cut if split == "train" else total - cut
