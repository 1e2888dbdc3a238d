"""``bioprop bench overhead``'s settings are the ones the issue names (no timing here)."""

from __future__ import annotations

import pytest

from trainers.benchmarks.overhead import one_spec, sweep_spec
from trainers.spec import ExperimentSpec


def test_the_sweep_is_rules_times_learning_rates_of_one_worker_each():
    spec = ExperimentSpec.model_validate(sweep_spec(4, 10, epochs=2))
    settings = list(spec.settings())
    assert len(settings) == 40
    assert {s.rule.name for _, s in settings} == {"bp", "fa", "dfa", "ss"}
    assert len({s.optim.lr for _, s in settings}) == 10
    assert all(s.scale.workers == 1 and s.schedule.epochs == 2 for _, s in settings)
    single = ExperimentSpec.model_validate(one_spec(1))
    assert [label for label, _ in single.settings()] == ["bp"]
    with pytest.raises(ValueError, match="rules must be 1..4"):
        sweep_spec(5, 1)
