"""``--set key=value`` overrides: applied as YAML values, checked against the spec's fields,
and refused by ``bioprop run``/``bioprop submit`` with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from trainers.overrides import OverrideError, apply_overrides, load_with_overrides


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("name: s\nmodel: mlp\ndata: {kind: imagefolder, root: SET_ME}\n")
    return path


def test_values_are_yaml_and_nested_paths_are_created(spec_file: Path) -> None:
    spec = load_with_overrides(
        spec_file,
        [
            "data.root=/data/imagenet",
            "rule.name=[bp, kp]",
            "rule.params.decay=0.75",
            "optim.manhattan=true",
            "data.synth.classes=7",
            "scale.workers=1",
        ],
    )
    assert str(spec.data.root) == "/data/imagenet" and spec.rule.name == ["bp", "kp"]
    assert spec.rule.params == {"decay": 0.75} and spec.optim.manhattan is True
    assert spec.data.synth.classes == 7 and spec.scale.workers == 1


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("data.rot=/x", "'data.rot' is not a spec field; valid here: kind, root"),
        ("optimizer.lr=1", "'optimizer' is not a spec field"),
        ("seed.x=1", "'seed' is a value, not a section"),
        ("data=1", "'data' is a section"),
        ("data.root", "expected key=value"),
        ("rule.name=[bp", "is not valid YAML"),
    ],
)
def test_bad_keys_are_named(item: str, needle: str) -> None:
    with pytest.raises(OverrideError, match="--set") as info:
        apply_overrides({}, [item])
    assert needle in str(info.value)


def test_bad_values_fail_validation_at_their_field(spec_file: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_with_overrides(spec_file, ["data.root=/d", "optim.lr=-1"])
    assert info.value.errors()[0]["loc"][:2] == ("optim", "lr")


@pytest.mark.parametrize("command", ["run", "submit"])
def test_cli_refuses_a_bad_override_naming_it(spec_file: Path, command: str) -> None:
    runner = CliRunner()
    out = runner.invoke(app, [command, str(spec_file), "--set", "data.rot=/d"])
    assert out.exit_code == 2 and "'data.rot' is not a spec field" in out.output
    out = runner.invoke(app, [command, str(spec_file), "--set", "data.root=/d", "--set", "seed=x"])
    assert out.exit_code == 2 and "seed" in out.output and "integer" in out.output


def test_exponents_without_a_dot_are_numbers(spec_file: Path) -> None:
    spec = load_with_overrides(spec_file, ["data.root=/d", "optim.lr=1e-3"])
    assert spec.optim.lr == 0.001
