"""ImageNet prepared into an S3-compatible store (moto's server, started by the test) and read
back from ``data.root: s3://...`` by DALI's own readers: per-rank shards that together hold
every image, the same sample order as the same shards on local disk, ``bioprop data check``
on the URI, and a preflight error naming the URI for a missing prefix or bucket and for
wrong credentials, before any loader is built."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import ilsvrc_archives as archives
import pytest
from typer.testing import CliRunner

import data_pipelines as dp
from data_pipelines import objstore
from data_pipelines.cli import app
from data_pipelines.objstore import DataRootError
from data_pipelines.prepare_sets import prepare_imagenet
from data_pipelines.spec import DataSpec

runner = CliRunner()


@pytest.fixture(scope="module")
def bucket(s3, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Bucket ``imagenet`` holding the official archives prepared as ``folder/`` and
    ``wds/``; also the source folder."""
    src = tmp_path_factory.mktemp("official")
    archives.official(src)
    s3.create_bucket(Bucket="imagenet")
    prepare_imagenet(src, "s3://imagenet/folder", subset=True)
    result = runner.invoke(
        app,
        ["prepare", "imagenet", str(src), "s3://imagenet/wds", "--subset", "--format", "shards",
         "--shard-size", "7"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return "s3://imagenet", src


def _epoch(root, split: str, shard_id: int, seed: int = 3) -> list[int]:
    data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=24))
    loader = dp.build_loader(data, split, batch_size=6, shard_id=shard_id, num_shards=2, seed=seed)
    return [int(x) for _, labels in loader for x in labels]


@pytest.mark.parametrize("layout", ["folder", "wds"])
def test_ranks_read_disjoint_shards_that_hold_every_image(bucket, layout: str) -> None:
    uri = f"{bucket[0]}/{layout}"
    assert dp.split_size(dp.prepare(DataSpec(kind="imagefolder", root=uri)), "train") == 36
    train = _epoch(uri, "train", 0) + _epoch(uri, "train", 1)
    assert Counter(train) == {0: 12, 1: 12, 2: 12}  # 3 steps of 6 per rank, all 36 images
    val = _epoch(uri, "val", 0) + _epoch(uri, "val", 1)
    assert Counter(val) == {0: 4, 1: 4, 2: 4}
    assert runner.invoke(app, ["check", uri]).exit_code == 0


def test_object_store_shards_read_in_the_order_of_the_same_shards_on_disk(
    bucket, tmp_path: Path
) -> None:
    local = tmp_path / "wds"
    prepare_imagenet(bucket[1], local, fmt="shards", subset=True, shard_size=7)
    assert _epoch(f"{bucket[0]}/wds", "train", 1, seed=5) == _epoch(local, "train", 1, seed=5)


def test_cached_shards_are_copied_once_and_read_in_the_same_order(
    bucket, tmp_path: Path, monkeypatch
) -> None:
    """``data.cache``: the split's shards copied whole to the node's cache, read from there
    in the order DALI reads them from the bucket; a second loader copies nothing, and a
    truncated copy (an interrupted download) is fetched again."""
    from data_pipelines.shard_cache import cache_dir

    monkeypatch.setenv("BIOPROP_SHARD_CACHE", str(tmp_path / "cache"))
    uri = f"{bucket[0]}/wds"

    def epoch(cache: bool) -> list[int]:
        data = dp.prepare(DataSpec(kind="imagefolder", root=uri, image_size=24, cache=cache))
        loader = dp.build_loader(data, "train", batch_size=6, shard_id=1, num_shards=2, seed=5)
        return [int(x) for _, labels in loader for x in labels]

    streamed = epoch(False)
    assert epoch(True) == streamed
    folder = cache_dir(uri)
    assert (folder / "SOURCE").read_text().strip() == uri
    copies = sorted(folder.glob("train/shard-*"))
    objects = {k: v for k, v in objstore.list_files(f"{uri}/train").items() if "shard-" in k}
    assert {p.name: p.stat().st_size for p in copies} == objects  # every .tar and .idx
    stamps = {p: p.stat().st_mtime_ns for p in copies}
    assert epoch(True) == streamed
    assert {p: p.stat().st_mtime_ns for p in copies} == stamps  # nothing copied again
    first = copies[0] if copies[0].suffix == ".tar" else copies[1]
    first.write_bytes(first.read_bytes()[:100])
    assert epoch(True) == streamed
    assert first.stat().st_size == objects[first.name]


def test_preflight_names_the_uri_and_what_is_wrong(bucket, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataRootError, match="s3://imagenet/nothing: no objects under"):
        dp.prepare(DataSpec(kind="imagefolder", root="s3://imagenet/nothing"))
    with pytest.raises(DataRootError, match="bucket 'no-such-bucket' does not exist"):
        dp.prepare(DataSpec(kind="imagefolder", root="s3://no-such-bucket/imagenet"))
    with pytest.raises(DataRootError, match="s3://no-such-bucket/in: bucket 'no-such-bucket'"):
        prepare_imagenet(bucket[1], "s3://no-such-bucket/in", subset=True)  # before reading
    result = runner.invoke(app, ["check", "s3://imagenet/nothing"])
    assert result.exit_code == 2 and "s3://imagenet/nothing" in result.output

    import boto3
    from moto_server import start_moto

    # a second server that checks signatures after its first action (the bucket's creation)
    proc, url = start_moto(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="1")
    try:
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="locked")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with pytest.raises(DataRootError, match="s3://locked/imagenet.*AWS_ACCESS_KEY_ID"):
            dp.prepare(DataSpec(kind="imagefolder", root="s3://locked/imagenet"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_bioprop_run_trains_two_workers_from_the_bucket(bucket, workdir, ray_cluster) -> None:
    """``bioprop run`` with ``data.root: s3://...``: the driver preflights the prefix, two
    Ray workers read their shards from the bucket (their environment holds AWS_*, as every
    node of a cluster does), and MLflow records the epochs and the data set's URI."""
    import json

    from dp_runs import bioprop_run_child

    spec = {
        "name": "from-s3",
        "model": "convnet",
        "data": {"kind": "imagefolder", "root": f"{bucket[0]}/wds", "image_size": 24},
        "rule": {"name": "bp"},
        "batch_size": 6,
        "schedule": {"epochs": 1},
        "scale": {"workers": 2},
    }
    run = bioprop_run_child(workdir, spec, "s3data", ray_cluster)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epoch"] == 1
    (dataset,) = run.inputs.dataset_inputs
    assert json.loads(dataset.dataset.source) == {"uri": "s3://imagenet/wds"}
    assert dataset.dataset.source_type == "s3"
    assert json.loads(dataset.dataset.profile)["train"] == 36
