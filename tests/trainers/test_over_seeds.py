"""A sweep's settings grouped over their seeds: the mean and sample standard deviation of
each group's metric, checked against the numbers worked by hand."""

from __future__ import annotations

import pytest

from trainers.spec import ExperimentSpec
from trainers.sweep import over_seeds, seed_groups

SPEC = {"rule": {"name": ["bp", "fa"]}, "optim": {"lr": [0.01, 0.1]}, "seed": [0, 1, 2]}


def _entry(label: str, value: float | None, status: str = "FINISHED") -> dict:
    return {"rule": label.split()[0], "setting": label, "status": status,
            "metrics": {} if value is None else {"val_acc": value}}  # fmt: skip


def test_settings_that_differ_by_their_seed_only_share_a_group() -> None:
    spec = ExperimentSpec.model_validate(SPEC)
    groups = seed_groups(spec)
    assert set(groups) == {label for label, _ in spec.settings()}  # the labels the runs carry
    assert groups["fa lr=0.1 seed=2"] == "fa lr=0.1"
    assert sorted(set(groups.values())) == ["bp lr=0.01", "bp lr=0.1", "fa lr=0.01", "fa lr=0.1"]
    assert seed_groups(ExperimentSpec.model_validate({**SPEC, "seed": 0})) == {}


def test_mean_and_sample_std_per_group_leave_out_what_failed() -> None:
    spec = ExperimentSpec.model_validate(SPEC)
    entries = [
        _entry("bp lr=0.01 seed=0", 0.90),
        _entry("bp lr=0.01 seed=1", 0.80),
        _entry("bp lr=0.01 seed=2", 0.70),  # mean 0.8, std sqrt(0.02 / 2) = 0.1
        _entry("fa lr=0.1 seed=0", 0.50),
        _entry("fa lr=0.1 seed=1", 0.99, status="FAILED"),  # not counted
        _entry("fa lr=0.1 seed=2", None),  # never reported: not counted
    ]
    rows = {row["setting"]: row for row in over_seeds(spec, entries)}
    assert set(rows) == {"bp lr=0.01", "fa lr=0.1"}
    bp, fa = rows["bp lr=0.01"], rows["fa lr=0.1"]
    assert (bp["mean"], bp["std"]) == (pytest.approx(0.8), pytest.approx(0.1))
    assert (bp["min"], bp["max"], bp["n"], bp["seeds"], bp["metric"]) == (0.7, 0.9, 3, 3, "val_acc")
    assert (fa["mean"], fa["std"], fa["n"]) == (0.5, 0.0, 1)
