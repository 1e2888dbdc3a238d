"""``bioprop data ...`` sub-commands, run through typer's test runner on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import data_pipelines as dp
from data_pipelines.bench import bench_loader
from data_pipelines.cli import app
from trainers.spec import DataSpec

runner = CliRunner()


def test_synth_imagenet_then_pack_then_check(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    args = ["synth", "imagenet", "--out", str(out), "--classes", "3", "--train-per-class", "5"]
    result = runner.invoke(app, [*args, "--val-per-class", "2", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "train").rglob("*.JPEG"))) == 15
    assert sorted(p.name for p in (out / "val").iterdir()) == ["c0000", "c0001", "c0002"]

    packed = tmp_path / "packed"
    result = runner.invoke(app, ["pack", str(out), "--out", str(packed), "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    assert dp.num_classes(dp.prepare(DataSpec(kind="imagefolder", root=packed))) == 3

    assert runner.invoke(app, ["check", str(out)]).exit_code == 0
    bad = out / "val" / "c0001" / "c0001_00000.JPEG"
    bad.write_bytes(bad.read_bytes()[:60])
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 1 and str(bad) in result.output
    result = runner.invoke(app, ["check", str(tmp_path / "typo")])
    assert result.exit_code == 2 and f"{tmp_path / 'typo'}: no such folder" in result.output


def test_synth_coco(tmp_path: Path) -> None:
    out = tmp_path / "coco"
    result = runner.invoke(app, ["synth", "coco", "--out", str(out), "--images", "5"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert len(doc["images"]) == 5 and len(list((out / "train").glob("*.jpg"))) == 5
    assert all(a["image_id"] in {i["id"] for i in doc["images"]} for a in doc["annotations"])


@pytest.mark.slow
def test_bench_loader_runs(tmp_path: Path) -> None:
    root = dp.synth_imagenet(tmp_path / "b", classes=2, train_per_class=8, val_per_class=1, size=48)
    result = bench_loader(
        root, image_size=32, batch_size=4, threads=1, batches=2, warmup=1, rounds=1
    )
    assert result["dali_images_per_s"] > 0 and result["torchvision_images_per_s"] > 0
    assert result["train_images"] == 16
