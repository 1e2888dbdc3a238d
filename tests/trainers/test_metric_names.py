"""MLflow names of the loop's metrics, the per-epoch layer-statistics table, angle against
depth, and the sweep summary of a detection sweep, on a real sqlite store without Ray (values
logged by hand)."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from trainers.spec import ExperimentSpec
from trainers.summary import write_summary
from trainers.tracking import (
    default_tracking_uri,
    finish_run,
    log_epoch,
    metric_name,
    mlflow_metrics,
    start_child,
    start_parent,
)


def _epoch(layers: dict[str, float], **extra: float) -> dict[str, float]:
    """A loop's epoch metrics: ``trainers.metrics`` keys, prefixed as the loop logs them."""
    out = dict(extra)
    for layer, angle in layers.items():
        out |= {f"align_{layer}.angle": angle, f"align_{layer}.norm_ratio": 1.5}
        out |= {f"align_{layer}.sign_concordance": 0.75, f"align_{layer}.kurtosis": 0.25}
        out |= {f"align_{layer}.mean": 0.0, f"align_{layer}.std": 0.125}
        out[f"galign_{layer}.grad_angle"] = angle / 2
    out |= {"align_mean_angle": sum(layers.values()) / len(layers), "align_mean_kurtosis": 0.25}
    return out


def test_layer_metrics_are_stat_slash_module_path_and_lean_by_default():
    epoch = _epoch({"layer1.0.conv1": 40.0, "fc": 20.0}, val_acc=0.5)
    named, rows, layers = mlflow_metrics(epoch)
    assert layers == ["layer1.0.conv1", "fc"]
    assert set(named) == {
        "val_acc",
        "align_mean_angle",
        *(f"{s}/{n}" for s in ("angle", "norm_ratio", "sign_concordance") for n in layers),
        "grad_angle/layer1.0.conv1",
        "grad_angle/fc",
    }
    assert named["angle/layer1.0.conv1"] == 40.0 and named["grad_angle/fc"] == 10.0
    stats = {"norm_ratio": 1.5, "sign_concordance": 0.75, "kurtosis": 0.25, "mean": 0.0}
    assert rows == [  # every statistic, whatever is a metric
        {"layer": "layer1.0.conv1", "angle": 40.0, **stats, "std": 0.125, "grad_angle": 20.0},
        {"layer": "fc", "angle": 20.0, **stats, "std": 0.125, "grad_angle": 10.0},
    ]
    full, rows_again, _ = mlflow_metrics(epoch, weight_stats=True)
    assert rows_again == rows and full["kurtosis/fc"] == 0.25
    assert full["align_mean_kurtosis"] == 0.25 and len(full) == len(named) + 3 * 2 + 1


def test_a_net_deeper_than_the_cap_logs_no_per_layer_metric():
    epoch = _epoch({f"l{i}": 10.0 * i for i in range(3)}, val_acc=0.5)
    capped, rows, layers = mlflow_metrics(epoch, max_layers=2)
    assert set(capped) == {"val_acc", "align_mean_angle"} and layers == ["l0", "l1", "l2"]
    assert [row["angle"] for row in rows] == [0.0, 10.0, 20.0]  # still in the table
    assert set(mlflow_metrics(epoch, max_layers=3)[0]) > set(capped)


def test_metric_name_keeps_what_mlflow_accepts():
    assert metric_name("angle/head.classification_head.conv.0.0") == (
        "angle/head.classification_head.conv.0.0"
    )
    assert metric_name("best_val_acc/sc p=0.75 manhattan=true") == (
        "best_val_acc/sc p_0.75 manhattan_true"
    )
    assert metric_name("angle//a/../b[0]") == "angle/a/b_0_"


def test_weight_stats_option_layer_table_and_angle_by_depth(workdir):
    uri = default_tracking_uri()
    client = MlflowClient(uri)
    layers = {"conv": 50.0, "fc": 30.0}
    for weight_stats in (False, True):
        spec = ExperimentSpec.model_validate(
            {"data": {"kind": "digits"}, "tracking": {"weight_stats": weight_stats}}
        )
        child = start_child(spec, uri=uri, parent_run_id=start_parent(spec, uri=uri))
        for step in (1, 2):
            epoch = _epoch({k: v + step for k, v in layers.items()})
            log_epoch(uri, child, epoch, step=step, weight_stats=weight_stats, final=step == 2)
        logged = client.get_run(child).data.metrics
        if weight_stats:
            assert logged["std/fc"] == 0.125
        else:
            assert "std/fc" not in logged and "align_mean_kurtosis" not in logged
        path = client.download_artifacts(child, "layer_stats.json", str(workdir))
        table = pd.read_json(path, orient="split")
        assert list(table["epoch"]) == [1, 1, 2, 2] and list(table["layer"]) == ["conv", "fc"] * 2
        assert list(table["kurtosis"]) == [0.25] * 4 and list(table["angle"]) == [51, 31, 52, 32]
        # the final epoch's angle per layer, step = depth from the input
        depth = client.get_metric_history(child, "angle_by_depth")
        assert sorted((m.step, m.value) for m in depth) == [(1, 52.0), (2, 32.0)]
        (dataset,) = client.get_run(child).inputs.dataset_inputs
        assert dataset.dataset.name == "digits" and '"train": 1437' in dataset.dataset.profile


def test_detection_sweep_summary_uses_map(workdir):
    uri = default_tracking_uri()
    spec = ExperimentSpec.model_validate(
        {
            "task": "detect",
            "model": "retinanet_resnet18_fpn",
            "data": {"kind": "synthetic"},  # never built: the runs are logged by hand
            "rule": {"name": ["bp", "ss"]},
        }
    )
    parent = start_parent(spec, uri=uri)
    maps = {"bp": [0.125, 0.375, 0.25], "ss": [0.05, 0.1, 0.15]}
    for label, setting in spec.settings():
        child = start_child(setting, uri=uri, parent_run_id=parent, setting=label)
        for step, value in enumerate(maps[label], start=1):
            angle = 1e-6 if label == "bp" else 40.0 - step
            layers = {"backbone.body.conv1": angle, "head.regression_head.conv.0.0": angle}
            log_epoch(uri, child, _epoch(layers, epoch=step, map=value), step=step)
        finish_run(uri, child, "FINISHED")
    summary = write_summary(uri, parent)
    assert [row["setting"] for row in summary["rows"]] == ["bp", "ss"]

    client = MlflowClient(uri)
    run = client.get_run(parent)
    path = client.download_artifacts(parent, "sweep_summary.json", str(workdir))
    table = pd.read_json(path, orient="split").set_index("setting")
    assert table.loc["bp", "final_map"] == 0.25 and table.loc["bp", "best_map"] == 0.375
    assert table.loc["ss", "best_align_mean_angle"] == pytest.approx(37.0)
    assert "val_loss" not in " ".join(table.columns)
    assert "val_loss" not in run.data.tags["mlflow.note.content"]
    note = run.data.tags["mlflow.note.content"]
    # the table first, ranked by final mAP; bp's float-noise angle as measured, not 0.0
    assert note.startswith("| setting ([report](#/experiments/"), note
    assert note.index("| `bp` | 0.250 | 0.375 | 1.0e-06 | 3 | FINISHED |") < note.index("`ss`")
    figures = {a.path for a in client.list_artifacts(parent, "summary")}
    assert "summary/map.png" in figures

    # the report: self-contained (nothing fetched), each setting's values as measured
    page = open(client.download_artifacts(parent, "sweep_report.html", str(workdir))).read()
    assert "http://" not in page and "https://" not in page and " src=" not in page
    assert '<td class="num" data-key="final_map" data-value="0.25"' in page
    assert 'data-key="final_align_mean_angle" data-value="1e-06" title="1e-06">1e-06<' in page
    assert page.count("<svg") == 3 and page.count('<tr data-setting="') == 2
    assert summary["layers"]["ss"] == [
        ("backbone.body.conv1", 37.0),
        ("head.regression_head.conv.0.0", 37.0),
    ]


def test_coco_evaluation_prints_nothing(capfd):
    import torch

    from trainers.detection import coco_map

    box = torch.tensor([[2.0, 2.0, 20.0, 20.0]])
    pred = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    found = coco_map([pred], [{"boxes": box, "labels": torch.tensor([1])}])
    assert found["map"] == pytest.approx(1.0)
    out, _ = capfd.readouterr()
    assert out == ""


def test_runs_carry_the_jobs_owner_as_mlflow_user(workdir, monkeypatch):
    """The service hands a driver its job's owner as ``BIOPROP_USER``
    (``service.backends.driver_env``): the parent and child runs show it as MLflow's user."""
    monkeypatch.setenv("BIOPROP_USER", "ann")
    uri = default_tracking_uri()
    spec = ExperimentSpec.model_validate({"data": {"kind": "digits"}})
    parent = start_parent(spec, uri=uri, job_id="job-of-ann")
    child = start_child(spec, uri=uri, parent_run_id=parent, job_id="job-of-ann")
    client = MlflowClient(uri)
    assert {client.get_run(r).data.tags["mlflow.user"] for r in (parent, child)} == {"ann"}


def test_a_long_sweeps_note_holds_its_top_rows(workdir):
    from trainers.summary import NOTE_ROWS, _markdown

    uri = default_tracking_uri()
    spec = ExperimentSpec.model_validate({"data": {"kind": "digits"}})
    parent = MlflowClient(uri).get_run(start_parent(spec, uri=uri))
    rows = [
        {"setting": f"sc p={i}", "rule": "sc", "status": "FINISHED", "epochs": 3}
        | {"final_val_acc": i / 20, "best_val_acc": i / 20, "final_align_mean_angle": 40.0}
        for i in range(NOTE_ROWS + 2)
    ]
    note = _markdown({"task": "classify", "headline": "val_acc", "rows": rows}, parent, uri)
    table = [line for line in note.splitlines() if line.startswith("| `")]
    # the 12 highest final val_acc, highest first; the 2 lowest only in the report
    assert [line.split("`")[1] for line in table] == [f"sc p={i}" for i in range(13, 1, -1)]
    assert "14 settings compared (the top 12 here)" in note
