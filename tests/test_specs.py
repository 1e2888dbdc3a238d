"""Every file in ``specs/`` (the papers' experiments) keeps working: each refuses to run
until its dataset root is set; every sweep setting of every file builds its model and
converts it to its rule with its params; and every file (one of each pair of siblings,
``SIBLING_OF``) runs one training step through ``bioprop run`` with ``--set`` overrides (a tiny synthetic set in place of
the dataset root, one CPU worker, its sweep narrowed to its first setting)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from service.cli import app
from trainers.overrides import load_with_overrides
from trainers.spec import ExperimentSpec, parse_yaml

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.yaml"))


def _size(path: Path) -> int:
    return 64 if "alexnet" in path.stem else 32  # AlexNet's strides need 64 px


def _tiny(path: Path, root: Path) -> list[str]:
    """Overrides that swap the dataset for a one-step synthetic set on one CPU worker."""
    size = _size(path)
    return [
        "data.kind=synthetic",
        f"data.root={root / f'synth-{size}'}",
        f"data.image_size={size}",
        "data.num_threads=1",
        f"data.synth={{classes: 2, train_per_class: 1, val_per_class: 1, size: {size}}}",
        "batch_size=2",
        "schedule.epochs=1",
        "scale={workers: 1, gpu: false, cpus_per_worker: 1}",
        f"storage_path={root / 'ray'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        "max_failures=0",
    ]


def test_specs_folder_has_the_papers_row_groups() -> None:
    assert {
        "xiao2018-resnet18-bp",
        "xiao2018-resnet18-rules",
        "xiao2018-alexnet-bn-bp",
        "xiao2018-alexnet-bn-rules",
        "akrout2019-resnet18",
        "jian-benna-pfa-resnet18",
        "liao2016-sign-concordance",
        "kunin2020-resnet18",
    } <= {p.stem for p in SPECS}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_needs_its_root_and_every_setting_builds(path: Path, tmp_path: Path) -> None:
    from trainers.tasks.classify import build_classifier

    with pytest.raises(ValidationError, match="data.root is required"):
        ExperimentSpec.model_validate(parse_yaml(path.read_text()))
    spec = load_with_overrides(path, _tiny(path, tmp_path))
    for label, setting in spec.settings():  # the rule accepts its params, the model converts
        model = build_classifier(setting, num_classes=2, in_channels=3)
        assert any(isinstance(m, torch.nn.Linear) for m in model.modules()), label


# A spec whose sibling differs only in its rule list's BP member or an optimizer flag adds no
# code path to a training run (the fast test above builds every setting of every file), so
# these run their sibling's path: each model, rule family and optimizer of specs/ still runs.
SIBLING_OF = {
    "xiao2018-resnet18-bp": "xiao2018-resnet18-rules",
    "xiao2018-alexnet-bn-bp": "xiao2018-alexnet-bn-rules",
    "liao2016-sign-concordance": "liao2016-sign-concordance-bm",
}


@pytest.mark.slow
def test_every_spec_family_runs_through_bioprop_run(workdir: Path, ray_cluster: str) -> None:
    stems = {p.stem for p in SPECS}
    assert set(SIBLING_OF.values()) <= stems
    runner = CliRunner()
    for path in (p for p in SPECS if p.stem not in SIBLING_OF):
        overrides = _tiny(path, workdir)
        spec = load_with_overrides(path, overrides)
        first = {axis: values[0] for axis, values in spec.sweep_axes().items()}
        overrides += [f"{axis}={json.dumps(value)}" for axis, value in first.items()]
        out = runner.invoke(app, ["run", str(path)] + [a for o in overrides for a in ("--set", o)])
        assert out.exit_code == 0, (path.name, out.output)
        rows = [line for line in out.output.splitlines() if "│ FINISHED" in line]
        assert len(rows) == 1, (path.name, out.output)  # the results table: one setting
