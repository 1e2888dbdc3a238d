"""The catalogue's descriptors equal the implementations they describe, and the spec refuses
what the catalogue does not list."""

from __future__ import annotations

import inspect

import pytest
from pydantic import ValidationError

from trainers import catalogue
from trainers.rules import RULES
from trainers.spec import ExperimentSpec
from trainers.sweep import best_per_rule


@pytest.mark.parametrize("rule", list(catalogue.RULES))
def test_rule_params_and_defaults_are_the_rule_class_defaults(rule: str) -> None:
    described = {key: p.default for key, p in catalogue.RULES[rule].params.items()}
    assert described == RULES[rule].defaults
    for key, param in catalogue.RULES[rule].params.items():
        assert param.accepts(param.default), (rule, key)


@pytest.mark.parametrize("rule", list(catalogue.RULES))
def test_rule_init_feedback_takes_every_described_param(rule: str) -> None:
    """The rule's ``init_feedback`` receives every described parameter by name."""
    signature = inspect.signature(RULES[rule].init_feedback)
    named = set(signature.parameters) - {"self"}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    assert takes_any or set(catalogue.RULES[rule].params) <= named


@pytest.mark.parametrize("model", list(catalogue.MODELS))
def test_model_params_are_the_builder_options_with_their_defaults(model: str) -> None:
    from trainers.models import MODELS

    builder = MODELS[model]
    assert builder.task == catalogue.MODELS[model].task
    options = {
        name: p.default
        for name, p in inspect.signature(builder).parameters.items()
        if name not in ("num_classes", "image_size", "in_channels")
    }
    assert options == {k: p.default for k, p in catalogue.MODELS[model].params.items()}


def test_model_params_are_checked_by_name_and_type() -> None:
    with pytest.raises(ValidationError, match=r"model_params.widht: model 'convnet' .* width"):
        ExperimentSpec.model_validate({"model": "convnet", "model_params": {"widht": 8}})
    with pytest.raises(ValidationError, match=r"model_params.depth: 2.5 is not a int"):
        ExperimentSpec.model_validate({"model": "mlp", "model_params": {"depth": [2, 2.5]}})


def test_unknown_and_mistyped_rule_params_name_the_key_and_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match=r"rule.params.dceay: rule 'kp' .* decay"):
        ExperimentSpec.model_validate({"rule": {"name": "kp", "params": {"dceay": 0.1}}})
    # a key must fit every rule of a sweep: ss takes scale, bp does not
    with pytest.raises(ValidationError, match="rule 'bp' has no parameter 'scale'"):
        ExperimentSpec.model_validate({"rule": {"name": ["ss", "bp"], "params": {"scale": 2}}})
    with pytest.raises(ValidationError, match=r"rule.params.mirror_every: 1.5 is not a int"):
        ExperimentSpec.model_validate({"rule": {"name": "wm", "params": {"mirror_every": 1.5}}})
    ok = {"rule": {"name": ["bp", "kp"], "params": {"decay": [0, 1e-4]}}}
    assert ExperimentSpec.model_validate(ok).sweep_size() == 4  # 2 rules x 2 decays


def test_a_searched_rule_param_is_checked_too() -> None:
    spec = {
        "rule": {"name": "kp"},
        "search": {"num_samples": 2, "space": {"rule.params.dceay": {"choice": [0.0, 0.1]}}},
    }
    with pytest.raises(ValidationError, match="rule 'kp' has no parameter 'dceay'"):
        ExperimentSpec.model_validate(spec)


def test_search_metric_must_be_one_the_task_reports() -> None:
    spec = {"search": {"metric": "map", "num_samples": 2, "space": {"optim.lr": {"choice": [0.1]}}}}
    with pytest.raises(ValidationError, match="'map' is not reported by task 'classify'"):
        ExperimentSpec.model_validate(spec)


@pytest.mark.parametrize("task", list(catalogue.TASKS))
def test_best_per_rule_without_a_search_uses_the_task_headline(task: str) -> None:
    metric, mode = catalogue.headline(task)
    sign = 1 if mode == "max" else -1
    entries = [
        {
            "rule": "bp",
            "setting": f"bp seed={i}",
            "run_id": str(i),
            "status": "FINISHED",
            "metrics": {metric: 0.5 + sign * 0.1 * i, "epoch": 3},
        }
        for i in range(3)
    ]
    spec = ExperimentSpec.model_construct(task=task, search=None)
    (row,) = best_per_rule(spec, entries)
    assert (row["metric"], row["setting"], row["epochs"]) == (metric, "bp seed=2", 3)


@pytest.mark.parametrize("task", list(catalogue.TASKS))
def test_a_task_reports_its_headline_and_compares_it_first(task: str) -> None:
    entry = catalogue.TASKS[task]
    assert entry.headline in entry.metrics and entry.summary[0] == entry.headline
    assert set(entry.summary) <= set(entry.metrics) and entry.mode in ("max", "min")
    assert entry.curves[-1] == ("align_mean_angle",)  # every task's last panel: the angle
