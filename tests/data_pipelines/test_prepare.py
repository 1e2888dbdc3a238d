"""``bioprop data prepare``: ImageNet from the official archives (devkit ground truth mapped
through meta.mat) and from the Kaggle layout, COCO from its zips, written as the loaders read
them; refusals naming the file for a truncated archive or a val label file that does not
match the images; an interrupted prepare resumes to the shards one run writes."""

from __future__ import annotations

import json
from pathlib import Path

import ilsvrc_archives as archives
import pytest
from typer.testing import CliRunner

import data_pipelines as dp
from data_pipelines.cli import app
from data_pipelines.imagenet import SourceError
from data_pipelines.pack import read_packed
from data_pipelines.prepare_sets import prepare_coco, prepare_imagenet
from data_pipelines.spec import DataSpec

runner = CliRunner()


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    src = tmp_path_factory.mktemp("official")
    return src, archives.official(src)


def _val_labels_from_loader(root: Path | str) -> list[int]:
    data = dp.prepare(DataSpec(kind="imagefolder", root=root, image_size=24))
    return [int(x) for _, labels in dp.build_loader(data, "val", batch_size=5) for x in labels]


def test_official_archives_to_folder_put_each_val_image_in_its_devkit_class(
    official, tmp_path: Path
) -> None:
    src, truth = official
    out = tmp_path / "imagenet"
    result = runner.invoke(app, ["prepare", "imagenet", str(src), str(out), "--subset"])
    assert result.exit_code == 0, result.output
    classes = sorted(archives.WNIDS)
    assert sorted(p.name for p in (out / "train").iterdir()) == classes
    placed = {p.name: p.parent.name for p in (out / "val").rglob("*.JPEG")}
    assert placed == truth  # by ILSVRC2012 id through meta.mat, not by line position
    assert len(list((out / "train").rglob("*.JPEG"))) == 3 * 12
    expected = [classes.index(truth[name]) for name in sorted(truth, key=truth.get)]
    assert sorted(_val_labels_from_loader(out)) == sorted(expected)
    gone = sorted((out / "train").rglob("*.JPEG"))[:5]  # as if stopped before writing these
    for path in gone:
        path.unlink()
    again = runner.invoke(app, ["prepare", "imagenet", str(src), str(out), "--subset"])
    assert again.exit_code == 0, again.output
    assert f"resumed: kept {3 * 12 + len(truth) - 5} files" in again.output
    assert all(path.exists() for path in gone)

    # without --subset, a set that is not ILSVRC2012 is refused, saying what it holds
    result = runner.invoke(app, ["prepare", "imagenet", str(src), str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "not ILSVRC2012's" in result.output and "--subset" in result.output
    assert not (tmp_path / "x").exists()


def test_kaggle_layout_to_shards_reads_back_with_its_csv_labels(tmp_path: Path) -> None:
    truth = archives.kaggle(tmp_path / "kaggle")
    out = tmp_path / "wds"
    summary = prepare_imagenet(tmp_path / "kaggle", out, fmt="shards", subset=True, shard_size=4)
    assert summary["layout"] == "kaggle" and summary["counts"]["val"] == 9
    assert len(read_packed(out, "train").tars) == 5  # 18 images, 4 a shard
    classes = sorted(archives.WNIDS)
    assert sorted(_val_labels_from_loader(out)) == sorted(classes.index(w) for w in truth.values())


def test_truncated_archive_and_mismatched_val_labels_are_refused_naming_the_file(
    official, tmp_path: Path
) -> None:
    src, _ = official
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in src.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    train = bad / "ILSVRC2012_img_train.tar"
    whole = train.read_bytes()
    train.write_bytes(whole[: len(whole) // 2])  # a download cut short
    with pytest.raises(SourceError, match=f"{train}: truncated archive"):
        prepare_imagenet(bad, tmp_path / "out", subset=True)
    train.write_bytes(whole)

    # a ground-truth file from another val set: one label fewer than there are images
    import io
    import tarfile

    kit = bad / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(kit) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    gt = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
    files[gt] = b"\n".join(files[gt].split()[:-1]) + b"\n"
    with tarfile.open(kit, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match="ILSVRC2012_validation_ground_truth.txt: lists 11 "):
        prepare_imagenet(bad, tmp_path / "out", subset=True)

    kaggle = tmp_path / "kaggle"
    archives.kaggle(kaggle)
    csv = kaggle / "LOC_val_solution.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")  # one image unlabelled
    with pytest.raises(SourceError, match=f"{csv}: has no label for .*ILSVRC2012_val_00000009"):
        prepare_imagenet(kaggle, tmp_path / "out", subset=True)


def test_interrupted_prepare_resumes_to_the_shards_of_one_run(official, tmp_path: Path) -> None:
    src, _ = official
    once = tmp_path / "once"
    assert prepare_imagenet(src, once, fmt="shards", subset=True, shard_size=5)["kept"] == 0

    class Stop(Exception):
        pass

    written = []

    def stop_after_three(n: int) -> None:
        written.append(n)
        if len(written) == 3:
            raise Stop

    resumed = tmp_path / "resumed"
    with pytest.raises(Stop):
        prepare_imagenet(
            src, resumed, fmt="shards", subset=True, shard_size=5, threads=1,
            progress=stop_after_three,
        )  # fmt: skip
    assert not (resumed / "wds.json").exists()
    first = {p: p.stat().st_mtime_ns for p in resumed.rglob("*.tar")}
    assert len(first) == 3
    present = [p for p in resumed.rglob("*") if p.is_file()]  # 3 shards, their indexes, layout
    summary = prepare_imagenet(src, resumed, fmt="shards", subset=True, shard_size=5, threads=1)
    assert summary["kept"] == len(present) > 6  # said, as the CLI prints it
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # not written again
    files = sorted(p.relative_to(once) for p in once.rglob("*") if p.is_file())
    assert sorted(p.relative_to(resumed) for p in resumed.rglob("*") if p.is_file()) == files
    for rel in files:
        if rel.name != "prepared.json":
            assert (resumed / rel).read_bytes() == (once / rel).read_bytes(), rel


def test_coco_zips_to_the_folder_the_coco_kind_reads(tmp_path: Path) -> None:
    archives.coco_zips(tmp_path / "zips")
    summary = prepare_coco(tmp_path / "zips", tmp_path / "coco", subset=True)
    assert summary["counts"] == {"train": 4, "val": 4}
    data = dp.prepare(DataSpec(kind="coco", root=tmp_path / "coco", image_size=32))
    assert dp.num_classes(data) == 1 and dp.split_size(data, "val") == 4
    zipped = tmp_path / "zips" / "val2017.zip"
    zipped.write_bytes(zipped.read_bytes()[:-200])  # the central directory cut off
    result = runner.invoke(
        app, ["prepare", "coco", str(tmp_path / "zips"), str(tmp_path / "c2"), "--subset"]
    )
    assert result.exit_code == 2 and "val2017.zip: truncated" in result.output.replace("\n", "")
    assert json.loads((tmp_path / "coco" / "prepared.json").read_text())["dataset"] == "coco"
