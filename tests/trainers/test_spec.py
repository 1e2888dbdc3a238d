"""The experiment spec: DESIGN.md's example validates, sweeps expand, errors name the field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from trainers.spec import ExperimentSpec, load_spec

DESIGN_EXAMPLE = """
name: resnet18-ss-imagenet
task: classify                 # classify | detect
model: resnet18
data:
  kind: imagefolder
  root: /data/imagenet
  image_size: 224
rule:
  name: ss
  last_layer: bp
  params: {}
optim: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4, manhattan: false}
schedule: {epochs: 50, step_every: 10, gamma: 0.1}
batch_size: 256
scale: {workers: 8, gpu: true, cpus_per_worker: 8}
checkpoint: {every_epochs: 1, keep: 3}
max_failures: 3
seed: 0
"""


def test_design_example_validates_from_yaml_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(DESIGN_EXAMPLE)
    spec = load_spec(path)
    assert spec.model == "resnet18" and spec.rule.name == "ss" and spec.rule.last_layer == "bp"
    assert str(spec.data.root) == "/data/imagenet" and spec.scale.workers == 8
    assert not spec.is_sweep and [s.rule.name for s in spec.expand()] == ["ss"]


def test_json_file_loads_the_same(tmp_path):
    import yaml

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(yaml.safe_load(DESIGN_EXAMPLE)))
    assert load_spec(path) == load_spec(DESIGN_EXAMPLE)


def test_sweep_expands_one_resolved_spec_per_rule():
    spec = ExperimentSpec.model_validate({"rule": {"name": ["bp", "kp"], "params": {"decay": 0}}})
    settings = spec.expand()
    assert spec.is_sweep
    assert [s.rule.name for s in settings] == ["bp", "kp"]
    assert all(s.rule.params == {"decay": 0} and not s.is_sweep for s in settings)
    assert spec.rule.name == ["bp", "kp"]  # the original is untouched


@pytest.mark.parametrize(
    ("patch", "location", "needle"),
    [
        ({"rule": {"name": "nope"}}, ("rule", "name"), "valid rules: bp, fa"),
        ({"model": "vgg"}, ("model",), "valid models: mlp"),
        ({"optim": {"lr": -1}}, ("optim", "lr"), "greater than 0"),
        ({"schedule": {"epochs": 0}}, ("schedule", "epochs"), "greater than or equal to 1"),
        ({"data": {"kind": "imagefolder"}}, ("data",), "data.root is required"),
        ({"data": {"colour": 1}}, ("data", "colour"), "Extra inputs"),
    ],
)
def test_bad_field_is_named(patch, location, needle):
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(patch)
    errors = info.value.errors()
    assert any(e["loc"][: len(location)] == location for e in errors), errors
    assert needle in str(info.value)


def test_missing_spec_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_flat_params_cover_every_section():
    params = ExperimentSpec().flat_params()
    assert params["optim.lr"] == "0.05" and params["rule.name"] == "bp"
    assert params["data.synth.classes"] == "4" and params["scale.workers"] == "2"


def test_sweep_grid_is_the_product_of_every_list_valued_sweepable_field():
    spec = ExperimentSpec.model_validate(
        {
            "rule": {"name": ["sc"], "params": {"p": [1, 0.5]}},
            "optim": {"manhattan": [False, True]},
            "seed": [0, 1, 2],
        }
    )
    assert spec.sweep_size() == 12
    settings = list(spec.settings())
    assert len(settings) == 12 and spec.is_sweep
    labels = [label for label, _ in settings]
    assert len(set(labels)) == 12
    assert "sc manhattan=true seed=2 p=0.5" in labels
    grid = {(s.optim.manhattan, s.seed, s.rule.params["p"]) for _, s in settings}
    assert grid == {(m, seed, p) for m in (False, True) for seed in (0, 1, 2) for p in (1, 0.5)}
    assert all(not s.is_sweep for _, s in settings)


def test_a_plain_spec_is_one_setting_labelled_by_its_rule():
    assert [label for label, _ in ExperimentSpec(rule={"name": "kp"}).settings()] == ["kp"]


def test_sweep_values_are_validated_each():
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate({"optim": {"lr": [0.1, -1]}})
    assert info.value.errors()[0]["loc"][:2] == ("optim", "lr")


def test_dfa_is_refused_for_detection_before_any_worker_starts():
    with pytest.raises(ValidationError, match="rule 'dfa'"):
        ExperimentSpec.model_validate(
            {"task": "detect", "model": "retinanet_resnet18_fpn", "rule": {"name": ["bp", "dfa"]}}
        )


def test_a_huge_grid_is_counted_and_walked_without_being_built():
    """Issue 12 finding 5: a grid of 10^10 settings is counted from its axes, and settings()
    yields the first one without expanding the rest."""
    from tiny_specs import HUGE_GRID

    spec = ExperimentSpec.model_validate(HUGE_GRID)
    assert spec.sweep_size() == 10**10
    label, first = next(iter(spec.settings()))
    assert not first.is_sweep
    assert (first.rule.params, first.model_params) == ({"p": 0.01}, {"hidden": 1, "depth": 1})
    assert (first.optim.lr, first.seed) == (0.01, 0) and label.startswith("sc ")
    assert spec.rule_names == ["sc"]


@pytest.mark.parametrize(
    ("patch", "location"),
    [
        ({"scale": {"workers": "2"}}, ("scale", "workers")),
        ({"scale": {"workers": True}}, ("scale", "workers")),
        ({"scale": {"workers": 10**400}}, ("scale", "workers")),
        ({"optim": {"lr": float("inf")}}, ("optim", "lr")),
        ({"optim": {"momentum": float("nan")}}, ("optim", "momentum")),
        ({"name": "   "}, ("name",)),
        ({"name": "a\u202eb"}, ("name",)),
        ({"name": "a\x00b"}, ("name",)),
        ({"rule": {"params": {"x": "\ud800"}}}, ("rule", "params")),
        ({"rule": {"params": {"x": [[[[[1]]]]]}}}, ("rule", "params")),
        ({"rule": {"params": {"not an identifier": 1}}}, ("rule", "params")),
        ({"seed": 2**60}, ("seed",)),
        ({"storage_path": "/tmp/a\x00"}, ("storage_path",)),
    ],
)
def test_strict_bounded_fields_refuse_what_a_job_cannot_use(patch, location):
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(patch)
    assert info.value.errors()[0]["loc"][: len(location)] == location


def test_yaml_exponents_without_a_dot_are_floats_for_the_strict_spec():
    """PyYAML reads ``1e-3`` as a string; the strict spec would refuse it."""
    assert load_spec("name: e\noptim: {lr: 1e-3, weight_decay: 5e-4}").optim.lr == 0.001


@pytest.mark.parametrize(
    ("rule", "optim", "needle"),
    [
        ("pfa", {"manhattan": True}, "rule 'pfa' cannot train with optim.manhattan true"),
        (["bp", "pfa_o"], {"manhattan": [False, True]}, "rule 'pfa_o' cannot train with"),
        ("pfa", {"name": "adam"}, "rule 'pfa' cannot train with optim.name 'adam'"),
    ],
)
def test_product_feedback_refuses_batch_manhattan_and_adam(rule, optim, needle):
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate({"rule": {"name": rule}, "optim": optim})
    assert needle in str(info.value) and "use optim.name 'sgd'" in str(info.value)
    ExperimentSpec.model_validate({"rule": {"name": rule}})  # plain SGD is fine
    ExperimentSpec.model_validate({"rule": {"name": "kp"}, "optim": optim})


def test_augment_defaults_by_kind_and_refusals():
    assert ExperimentSpec().data.augmentation == "imagenet"
    assert ExperimentSpec(data={"kind": "digits"}).data.augmentation == "none"
    assert ExperimentSpec(data={"augment": "cifar"}).data.augmentation == "cifar"
    with pytest.raises(ValidationError, match="data.augment 'cifar' is not available"):
        ExperimentSpec.model_validate({"data": {"kind": "digits", "augment": "cifar"}})


def test_model_params_are_checked_and_sweep():
    spec = ExperimentSpec(model="mlp", model_params={"depth": [2, 6], "bn": True})
    assert [label for label, _ in spec.settings()] == ["bp depth=2", "bp depth=6"]
    with pytest.raises(ValidationError, match=r"model_params.depht: model 'mlp' has no parameter"):
        ExperimentSpec.model_validate({"model": "mlp", "model_params": {"depht": 3}})
