"""The ``sweep:``/``search:`` spec sections and the per-rule search algorithms, without Ray
trials: what a search samples, per grid point."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from trainers.spec import ExperimentSpec
from trainers.sweep import _per_point_optuna, max_concurrent


def _spec(**search) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "rule": {"name": ["bp", "fa"]},
            "search": {"space": {"optim.lr": {"loguniform": [1e-4, 1e-1]}}, **search},
        }
    )


def test_trial_count_is_grid_points_times_samples() -> None:
    assert _spec(num_samples=3).trial_count() == 6
    grid = _spec(num_samples=2, space={"optim.lr": {"grid": [0.1, 0.01, 0.001]}})
    assert grid.trial_count() == 2 * 2 * 3
    assert ExperimentSpec.model_validate({"seed": [0, 1, 2]}).trial_count() == 3


def test_searched_field_may_not_also_be_a_grid_list() -> None:
    with pytest.raises(ValidationError, match="optim.lr is also a sweep list"):
        ExperimentSpec.model_validate(
            {"optim": {"lr": [0.1, 0.2]}, "search": {"space": {"optim.lr": {"choice": [0.1]}}}}
        )


def test_grace_period_beyond_the_epochs_is_refused() -> None:
    with pytest.raises(ValidationError, match="grace_period 5 is more than schedule.epochs 3"):
        _spec(asha={"grace_period": 5})


def test_concurrency_is_what_the_cluster_holds_capped_by_the_spec() -> None:
    spec = ExperimentSpec.model_validate({"scale": {"workers": 2}, "seed": [0, 1, 2, 3, 4]})
    assert max_concurrent(spec, 5, {"CPU": 2.0}) == 1
    assert max_concurrent(spec, 5, {"CPU": 7.0}) == 3
    assert max_concurrent(spec, 2, {"CPU": 64.0}) == 2
    capped = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"max_concurrent": 2})})
    assert max_concurrent(capped, 5, {"CPU": 64.0}) == 2
    gpu = ExperimentSpec.model_validate({"scale": {"workers": 4, "gpu": True}})
    assert max_concurrent(gpu, 8, {"CPU": 128.0, "GPU": 8.0}) == 2


def test_optuna_keeps_one_study_per_rule() -> None:
    spec = _spec(num_samples=3, algorithm="optuna")
    points = [{"label": label, "spec": {}} for label, _ in spec.settings()]
    searcher = _per_point_optuna(spec.search, points, {"job_id": "j"})
    configs = {}
    for i in range(6):
        configs[f"t{i}"] = searcher.suggest(f"t{i}")
    assert searcher.suggest("t6") == "FINISHED"  # 3 per rule, then done
    rules = [c["point"]["label"] for c in configs.values()]
    assert sorted(rules) == ["bp"] * 3 + ["fa"] * 3
    for config in configs.values():
        lr = config["sample"]["optim.lr"]
        assert 1e-4 <= lr <= 1e-1 and config["job_id"] == "j"
    for trial_id, config in configs.items():
        value = -abs(math.log10(config["sample"]["optim.lr"]) + 2)
        searcher.on_trial_complete(trial_id, {"val_acc": value})
    studies = {label: sub._ot_study for label, sub in searcher._subs.items()}
    assert {label: len(s.trials) for label, s in studies.items()} == {"bp": 3, "fa": 3}
