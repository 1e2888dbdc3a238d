"""The breaking-point study (``trainers.reproductions.breaking_point``, a ``trainers.reproductions.reproduce`` part): its
specs cover the grids, its table and claims follow the numbers, and a tiny real run (Ray
Tune search with ASHA per grid point, digits MLP) leaves heat maps and the table on the
sweep's MLflow parent run, read back with MLflow's client."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.names import RULE_NAMES
from trainers.reproductions import reproduce
from trainers.reproductions.breaking_point import (
    breaking_points,
    finish_study,
    section,
    study_records,
    study_specs,
    summarize,
)
from trainers.spec import ExperimentSpec


def test_full_grid_covers_every_rule_depths_2_to_12_and_widths_32_to_512() -> None:
    specs = reproduce.sweep_specs(1, 5, 4, grid="full")
    mlp = ExperimentSpec.model_validate(specs["breaking-mlp"])
    axes = mlp.sweep_axes()
    assert min(axes["model_params.depth"]) == 2 and max(axes["model_params.depth"]) == 12
    assert min(axes["model_params.hidden"]) == 32 and max(axes["model_params.hidden"]) == 512
    assert axes["rule.name"] == list(RULE_NAMES)
    assert mlp.search.asha is not None and mlp.search.space["optim.lr"].grid
    conv = ExperimentSpec.model_validate(specs["breaking-conv"])
    assert conv.sweep_axes()["model_params.blocks"] == [1, 2, 3, 4, 5]
    small = ExperimentSpec.model_validate(reproduce.sweep_specs(1, 5, 4)["breaking-mlp"])
    assert small.trial_count() < mlp.trial_count()
    assert ("breaking-mlp", "breaking-mlp", specs["breaking-mlp"]) in reproduce.parts(specs)


def _records(gap) -> list[dict]:
    """Trials at depths 2, 6, 12 x widths 32, 256: bp at 95 %, a rule ``gap(rule, d, w)``
    points behind at its best rate (0.05) and 20 points worse at the other (0.5)."""
    out = []
    for rule in ("bp", "fa", "ia"):
        for d in (2, 6, 12):
            for w in (32, 256):
                best = 95.0 - (0 if rule == "bp" else gap(rule, d, w))
                for lr, acc in ((0.05, best), (0.5, best - 20)):
                    out.append(dict(rule=rule, depth=d, width=w, lr=lr, status="FINISHED",
                                    val_acc=acc / 100, angle=80.0 - w / 10, epochs=1))  # fmt: skip
    out.append(dict(rule="fa", depth=2, width=32, lr=1.0, status="FAILED", val_acc=0.99))
    return out


def test_breaking_table_and_claims_follow_the_numbers() -> None:
    grows = _records(lambda r, d, w: d if (r, w) == ("fa", 32) or r == "ia" else 1.0)
    summary = summarize(grows)
    assert summary[("fa", 2, 32)]["lr"] == 0.05  # the stopped trial does not count
    assert summary[("fa", 12, 32)]["gap"] == pytest.approx(12.0)
    points = breaking_points(summary)
    assert points["fa"]["first"] == (6, 32) and points["fa"]["width"] == 32
    assert points["ia"]["first"] == (6, 32) and points["ia"]["width"] == 32
    text = "\n".join(section({"breaking-mlp": grows}, epochs=1, conv_epochs=1))
    assert "| fa | 6, 32 | 6 | 32 | 12.0 at 12, 32 | 6 |" in text
    agrees, disagrees = text.split("Disagrees or not reproduced:")
    assert "FA falls behind BP as the net deepens" in agrees
    assert "IA's gap to BP grows with depth" in agrees
    assert "Narrow layers hinder FA's alignment" in agrees  # angle 76.8 at 32, 54.4 at 256
    assert "DFA fails on conv nets" in text.split("Not measured")[1]

    flat = _records(lambda r, d, w: 1.0)
    text = "\n".join(section({"breaking-mlp": flat}, epochs=1, conv_epochs=1))
    agrees, disagrees = text.split("Disagrees or not reproduced:")
    assert "FA falls behind BP as the net deepens" in disagrees
    assert "| fa | never | - | - | 1.0 at 2, 32 | 6 |" in text


def test_points_where_bp_itself_does_not_learn_compare_nothing() -> None:
    """At depth 12 BP (and so every rule) sits at chance: a gap of 0 there must not read as
    "never broken", nor let a gap that grows with depth look flat."""
    records = _records(lambda r, d, w: d)
    for rec in records:
        if rec["depth"] == 12:
            rec["val_acc"] = 0.08  # chance on 10 classes
    summary = summarize(records)
    assert summary[("fa", 12, 32)]["gap"] is None and summary[("bp", 12, 256)]["bp_failed"]
    assert summary[("fa", 6, 32)]["gap"] == pytest.approx(6.0)
    assert breaking_points(summary)["fa"]["measured"] == 4
    text = "\n".join(section({"breaking-mlp": records}, epochs=1, conv_epochs=1))
    assert "BP itself did not learn at 12, 32; 12, 256" in text
    agrees = text.split("Disagrees or not reproduced:")[0]
    assert "fa's gap to BP 2.0 points at depth 2, 6.0 at depth 6" in agrees


@pytest.mark.slow
def test_tiny_study_logs_heat_maps_and_table_to_the_parent_run(
    workdir: Path, ray_cluster: str
) -> None:
    from mlflow import MlflowClient

    from trainers.launch import run_experiment

    grid = {"depths": [1, 3], "widths": [16], "blocks": [1], "lrs": [0.05]}
    common = {
        "task": "classify",
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "batch_size": 64,
        "scale": {"workers": 1, "cpus_per_worker": 1},
        "max_failures": 0,
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}"},
    }
    spec = study_specs(grid, 1, 1, common, ["bp", "fa"])["breaking-mlp"]
    run_experiment(ExperimentSpec.model_validate(spec), job_id="breaking-tiny")
    uri = common["tracking"]["uri"]
    records = study_records("breaking-tiny", uri, epochs=1)
    assert sorted((r["rule"], r["depth"], r["width"]) for r in records) == [
        ("bp", 1, 16), ("bp", 3, 16), ("fa", 1, 16), ("fa", 3, 16),
    ]  # fmt: skip
    assert all(r["status"] == "FINISHED" and r["val_acc"] is not None for r in records)
    summary = finish_study("breaking-mlp", records, "breaking-tiny", uri, workdir / "figs")
    assert summary[("bp", 3, 16)]["gap"] == 0.0 and summary[("fa", 3, 16)]["gap"] is not None

    client = MlflowClient(uri)
    parent = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`bioprop.role` = 'parent'",
    )[0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "breaking-point")}
    assert {
        "breaking-point/breaking-mlp-fa.png",
        "breaking-point/breaking-mlp-bp.png",
        "breaking-point/breaking-mlp-gap.png",
        "breaking-point/breaking-mlp-table.md",
    } <= names
    table = Path(
        client.download_artifacts(parent.info.run_id, "breaking-point/breaking-mlp-table.md")
    ).read_text()
    assert table.splitlines()[2].startswith("| fa | ")
