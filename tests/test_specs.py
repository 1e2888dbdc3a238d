"""Every file in ``specs/`` (the papers' experiments) runs one training step of every sweep
setting through ``bioprop run`` with ``--set`` overrides: a tiny synthetic set in place of
the dataset root, one worker on CPU. So the shipped specs never rot."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from trainers.overrides import load_with_overrides
from trainers.spec import ExperimentSpec

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.yaml"))


def test_specs_folder_has_the_papers_row_groups() -> None:
    names = {p.stem for p in SPECS}
    assert {
        "xiao2018-resnet18-bp",
        "xiao2018-resnet18-rules",
        "xiao2018-alexnet-bn-bp",
        "xiao2018-alexnet-bn-rules",
        "akrout2019-resnet18",
        "jian-benna-pfa-resnet18",
        "liao2016-sign-concordance",
    } <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_needs_its_dataset_root(path: Path) -> None:
    import yaml
    from pydantic import ValidationError

    data = yaml.safe_load(path.read_text())
    with pytest.raises(ValidationError, match="data.root is required"):
        ExperimentSpec.model_validate(data)


@pytest.mark.slow
def test_every_spec_runs_one_step_per_setting(workdir: Path, ray_cluster: str) -> None:
    runner = CliRunner()
    for path in SPECS:
        size = 64 if "alexnet" in path.stem else 32  # AlexNet's strides need 64 px
        overrides = [
            "data.kind=synthetic",
            f"data.root={workdir / f'synth-{size}'}",
            f"data.image_size={size}",
            "data.num_threads=1",
            f"data.synth={{classes: 2, train_per_class: 1, val_per_class: 1, size: {size}}}",
            "batch_size=2",
            "schedule.epochs=1",
            "scale={workers: 1, gpu: false, cpus_per_worker: 1}",
            f"storage_path={workdir / 'ray'}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            "max_failures=0",
        ]
        settings = load_with_overrides(path, overrides).settings()
        args = ["run", str(path)] + [a for o in overrides for a in ("--set", o)]
        out = runner.invoke(app, args)
        assert out.exit_code == 0, (path.name, out.output)
        assert out.output.count("FINISHED") == len(settings), (path.name, out.output)
