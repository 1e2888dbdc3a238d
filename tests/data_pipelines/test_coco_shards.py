"""COCO as webdataset shards: packed from a folder or prepared from the official zips, in a
folder or in an S3-compatible bucket (moto's server, started by the tests), read back by
the ``coco`` kind with the same images, boxes and category ids as the folder gives, per
image, and trained on by ``bioprop run`` with two workers reading the bucket's shards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import ilsvrc_archives as archives
import pytest
import torch
from typer.testing import CliRunner

import data_pipelines as dp
from data_pipelines.cli import app
from data_pipelines.prepare_sets import prepare_coco
from data_pipelines.spec import DataSpec

runner = CliRunner()


def _with_a_crowd_box(root: Path) -> None:
    """Mark the val split's first annotation as a crowd region, as real COCO has them."""
    path = root / "annotations" / "instances_val.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["iscrowd"] = 1
    path.write_text(json.dumps(doc))


def _by_image(root, split: str, **options) -> dict[int, tuple[torch.Tensor, dict]]:
    """``image id -> (image, target)`` over one epoch of ``split`` on one rank."""
    data = dp.prepare(DataSpec(kind="coco", root=root, image_size=40))
    loader = dp.build_loader(data, split, batch_size=3, with_ids=True, **options)
    out = {}
    for images, targets, ids in loader:
        for image, target, image_id in zip(images, targets, ids, strict=True):
            out.setdefault(image_id, (image, target))  # the val split's padding repeats one
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for image_id, (image, target) in a.items():
        other_image, other = b[image_id]
        assert torch.equal(image, other_image), image_id
        assert torch.equal(target["labels"], other["labels"]), image_id
        assert torch.allclose(target["boxes"], other["boxes"], atol=1e-4), image_id


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = dp.synth_coco(tmp_path_factory.mktemp("coco") / "set", images=10, size=40)
    _with_a_crowd_box(root)
    return root


def test_packed_folder_reads_each_image_with_the_boxes_of_the_folder(
    coco_folder: Path, tmp_path: Path
) -> None:
    checked = runner.invoke(app, ["check", str(coco_folder)])  # the folder, then its shards
    assert checked.exit_code == 0 and "checked 12 files, 0 undecodable" in checked.output
    packed = tmp_path / "packed"
    result = runner.invoke(
        app, ["pack", str(coco_folder), "--out", str(packed), "--shard-size", "4"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (packed / "train").glob("*.tar")) == [
        "shard-00000.tar",
        "shard-00001.tar",
        "shard-00002.tar",
    ]
    checked = runner.invoke(app, ["check", str(packed)])
    assert checked.exit_code == 0 and "checked 12 files, 0 undecodable" in checked.output
    for crowd in (False, True):
        folder = _by_image(coco_folder, "val", include_crowd=crowd)
        _assert_same(_by_image(packed, "val", include_crowd=crowd), folder)
    plain, crowd = _by_image(packed, "val"), _by_image(packed, "val", include_crowd=True)
    assert sum(len(t["labels"]) for _, t in crowd.values()) == 1 + sum(
        len(t["labels"]) for _, t in plain.values()
    )
    data = dp.prepare(DataSpec(kind="coco", root=packed, image_size=40))
    assert dp.num_classes(data) == dp.num_classes(
        dp.prepare(DataSpec(kind="coco", root=coco_folder, image_size=40))
    )
    assert (dp.split_size(data, "train"), dp.split_size(data, "val")) == (10, 2)
    # two ranks' train shards hold every image once (flips aside, the folder's boxes)
    seen = Counter()
    for rank in (0, 1):
        loader = dp.build_loader(
            data, "train", batch_size=5, shard_id=rank, num_shards=2, seed=5, with_ids=True
        )
        seen.update(i for _, _, ids in loader for i in ids)
    assert seen == Counter(range(1, 11))
    # the original annotations travel with the shards, for evaluation tools
    manifest = json.loads((packed / "wds.json").read_text())
    assert manifest["annotations"]["val"] == "annotations/instances_val.json"
    assert (packed / "annotations" / "instances_val.json").read_bytes() == (
        coco_folder / "annotations" / "instances_val.json"
    ).read_bytes()


def test_a_packed_coco_set_is_refused_as_an_imagefolder_and_skip_empty_named(
    coco_folder: Path, tmp_path: Path
) -> None:
    from data_pipelines.coco_pack import pack_coco

    pack_coco(coco_folder, tmp_path / "packed")
    with pytest.raises(ValueError, match=r"wds.json holds a packed coco set; data.kind must be"):
        dp.prepare(DataSpec(kind="imagefolder", root=tmp_path / "packed", image_size=40))
    data = dp.prepare(DataSpec(kind="coco", root=tmp_path / "packed", image_size=40))
    with pytest.raises(ValueError, match="skip_empty needs a COCO folder"):
        dp.build_loader(data, "train", batch_size=2, skip_empty=True)


@pytest.fixture(scope="module")
def coco_bucket(s3, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Bucket ``coco`` holding the official zips prepared as shards; also the zips."""
    src = tmp_path_factory.mktemp("coco-zips")
    archives.coco_zips(src, images=8, size=48)
    s3.create_bucket(Bucket="coco")
    result = runner.invoke(
        app,
        ["prepare", "coco", str(src), "s3://coco/2017", "--subset", "--format", "shards",
         "--shard-size", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return "s3://coco/2017", src


def test_zips_to_shards_in_the_bucket_read_as_the_prepared_folder(
    coco_bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, src = coco_bucket
    checked = runner.invoke(app, ["check", uri])
    assert checked.exit_code == 0 and "checked 16 files, 0 undecodable" in checked.output
    prepare_coco(src, tmp_path / "folder", subset=True)
    folder = _by_image(tmp_path / "folder", "val")
    _assert_same(_by_image(uri, "val"), folder)
    monkeypatch.setenv("BIOPROP_SHARD_CACHE", str(tmp_path / "cache"))
    data = dp.prepare(DataSpec(kind="coco", root=uri, image_size=40, cache=True))
    loader = dp.build_loader(data, "val", batch_size=3, with_ids=True)
    cached = {i: (im, t) for ims, ts, ids in loader for im, t, i in zip(ims, ts, ids, strict=True)}
    _assert_same(cached, folder)
    staged = sorted(p.relative_to(p.parents[1]) for p in (tmp_path / "cache").rglob("*.tar"))
    assert [str(p) for p in staged] == [
        f"val/shard-0000{i}.tar" for i in range(3)
    ]  # the split read


def test_prepare_to_shards_resumes_and_refuses_a_box_outside_its_image(
    coco_bucket, tmp_path: Path
) -> None:
    _, src = coco_bucket
    once, resumed = tmp_path / "once", tmp_path / "resumed"
    prepare_coco(src, once, fmt="shards", subset=True, shard_size=3)
    prepare_coco(src, resumed, fmt="shards", subset=True, shard_size=3)
    (resumed / "train" / "shard-00001.idx").unlink()  # stopped while writing this shard
    (resumed / "wds.json").unlink()
    first = {p: p.stat().st_mtime_ns for p in resumed.rglob("*.tar")}
    prepare_coco(src, resumed, fmt="shards", subset=True, shard_size=3)
    rewritten = {p for p, t in first.items() if p.stat().st_mtime_ns != t}
    assert rewritten == {resumed / "train" / "shard-00001.tar"}
    for path in once.rglob("*"):
        if path.is_file() and path.name != "prepared.json":
            assert (resumed / path.relative_to(once)).read_bytes() == path.read_bytes(), path
    # resumed with another shard size, its shards would hold other images: refused
    (resumed / "wds.json").unlink()
    result = runner.invoke(
        app,
        ["prepare", "coco", str(src), str(resumed), "--subset", "--format", "shards",
         "--shard-size", "4"],
    )  # fmt: skip
    output = result.output.replace("\n", "")
    assert result.exit_code == 2 and "train/layout.json: these shards were begun with" in output
    assert not (resumed / "wds.json").exists()

    import zipfile

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("train2017.zip", "val2017.zip"):
        (bad / name).write_bytes((src / name).read_bytes())
    with zipfile.ZipFile(src / "annotations_trainval2017.zip") as zf:
        docs = {n: json.loads(zf.read(n)) for n in zf.namelist()}
    docs["annotations/instances_val2017.json"]["annotations"][1]["bbox"] = [40, 40, 30, 30]
    with zipfile.ZipFile(bad / "annotations_trainval2017.zip", "w") as zf:
        for name, doc in docs.items():
            zf.writestr(name, json.dumps(doc))
    result = runner.invoke(
        app, ["prepare", "coco", str(bad), str(tmp_path / "out"), "--subset", "--format", "shards"]
    )
    output = result.output.replace("\n", "")
    assert result.exit_code == 2, result.output
    assert "instances_val2017.json: annotation 2 box [40, 40, 30, 30]" in output
    assert not (tmp_path / "out" / "wds.json").exists()


def test_a_folder_prepare_to_a_bucket_is_refused_naming_shards(coco_bucket) -> None:
    _, src = coco_bucket
    result = runner.invoke(app, ["prepare", "coco", str(src), "s3://coco/folder", "--subset"])
    assert result.exit_code == 2 and "--format shards" in result.output.replace("\n", "")


@pytest.mark.slow
def test_bioprop_run_trains_detection_on_two_workers_from_the_buckets_shards(
    coco_bucket, workdir, ray_cluster
) -> None:
    """``bioprop run`` with ``data: {kind: coco, root: s3://..., cache: true}``: two Ray
    workers copy the shards to their node's cache and train RetinaNet from them; MLflow
    records the epoch, mAP and the data set's URI."""
    from dp_runs import bioprop_run_child

    from data_pipelines.shard_cache import cache_dir

    uri, _ = coco_bucket
    spec = {
        "name": "coco-from-s3",
        "task": "detect",
        "model": "retinanet_resnet18_fpn",
        "data": {"kind": "coco", "root": uri, "image_size": 48, "cache": True},
        "rule": {"name": "fa", "last_layer": "bp"},
        "optim": {"lr": 0.01, "clip_grad_norm": 10.0},
        "batch_size": 4,
        "schedule": {"epochs": 1},
        "scale": {"workers": 2},
    }
    run = bioprop_run_child(workdir, spec, "coco-s3", ray_cluster)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epoch"] == 1 and 0.0 <= run.data.metrics["map"] <= 1.0
    (dataset,) = run.inputs.dataset_inputs
    assert json.loads(dataset.dataset.source) == {"uri": uri}
    assert json.loads(dataset.dataset.profile)["train"] == 8
    folder = cache_dir(uri)  # under the workers' BIOPROP_SHARD_CACHE (the ray_cluster's)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tar")) == [
        f"{split}/shard-0000{i}.tar" for split in ("train", "val") for i in range(3)
    ]


def test_data_bench_reads_a_coco_folder_and_its_shards_side_by_side(
    coco_folder: Path, tmp_path: Path
) -> None:
    from data_pipelines.bench import bench_roots
    from data_pipelines.coco_pack import pack_coco

    packed = pack_coco(coco_folder, tmp_path / "packed", shard_size=4)
    result = bench_roots(
        [coco_folder, packed], image_size=40, batch_size=2, batches=3, warmup=1, rounds=1
    )
    assert set(result["images_per_s"]) == {str(coco_folder), str(packed)}
    assert all(rate > 0 for rate in result["images_per_s"].values())
