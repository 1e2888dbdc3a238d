"""The sizes of the digits splits (:mod:`data_pipelines.digits`), counted from the data file
scikit-learn ships, without importing scikit-learn or torch: a driver that records the data
section (``trainers.run_context``) needs only the counts, and those imports cost seconds of
every run's start-up. Falls back to loading the set when the file is not where scikit-learn
keeps it."""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

__all__ = ["TRAIN_FRACTION", "digits_total", "split_size"]

TRAIN_FRACTION = 0.8
DATA_FILE = ("datasets", "data", "digits.csv.gz")  # what sklearn.datasets.load_digits reads


@lru_cache(maxsize=1)
def digits_total() -> int:
    """Images in the whole set (1797 in every scikit-learn release so far)."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for base in locations:
        path = Path(base).joinpath(*DATA_FILE)
        if path.is_file():
            with gzip.open(path, "rt") as rows:
                return sum(1 for row in rows if row.strip())
    from sklearn.datasets import load_digits

    return len(load_digits().target)


def split_size(split: str) -> int:
    """Images in ``split`` ("train": the first 80 % of the permuted set; else the rest)."""
    cut = int(digits_total() * TRAIN_FRACTION)
    return cut if split == "train" else digits_total() - cut
