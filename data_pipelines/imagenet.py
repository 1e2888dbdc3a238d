"""ImageNet (ILSVRC2012) as users hold it, read into a checked list of samples.

Two source layouts under one folder ``SRC`` (:func:`read_imagenet` finds which):

- **official archives**: ``ILSVRC2012_img_train.tar`` (one tar per class, ``<wnid>.tar``,
  inside one tar), ``ILSVRC2012_img_val.tar`` (``ILSVRC2012_val_<n>.JPEG``, flat) and the
  devkit ``ILSVRC2012_devkit_t12.tar.gz`` (or that folder unpacked): its
  ``data/ILSVRC2012_validation_ground_truth.txt`` gives the label of val image ``n`` on line
  ``n`` as an ILSVRC2012 id (1-1000), mapped to a wnid through ``data/meta.mat``'s
  ``synsets`` (the entries with no children; read with ``scipy.io.loadmat``, scipy being a
  dependency of scikit-learn), as torchvision's ``ImageNet`` does. Nothing is unpacked: the
  archives' headers are listed once and each image is read at its offset.
- **Kaggle** (``imagenet-object-localization-challenge``): ``ILSVRC/Data/CLS-LOC/train/
  <wnid>/*.JPEG``, ``ILSVRC/Data/CLS-LOC/val/*.JPEG`` and ``LOC_val_solution.csv``
  (``ImageId,PredictionString``; the label is the first wnid of the string).

Classes are the train wnids in sorted order (torchvision's ``ImageFolder`` index); samples
are sorted by (class, file name). The counts are checked against ILSVRC2012 (1,000 classes,
1,281,167 train and 50,000 val images) unless ``subset=True`` (a deliberate part of it; val
images of classes not among the train ones are then left out, and counted). A truncated
archive, or a val label file that does not match the val images (another count, a name it
lacks or does not know, an id or wnid that is no class), is refused with the file named.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FULL", "ImagenetSource", "Sample", "SourceError", "read_imagenet"]

#: ILSVRC2012-CLS: classes, train images, val images
FULL = {"classes": 1000, "train": 1_281_167, "val": 50_000}
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
KAGGLE_ROOT = Path("ILSVRC/Data/CLS-LOC")
KAGGLE_CSV = "LOC_val_solution.csv"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$")
_IMAGE = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)


class SourceError(ValueError):
    """A source that cannot be prepared; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One image: its file name, class index and how to read its bytes."""

    name: str
    label: int
    read: Callable[[], bytes] = field(compare=False, repr=False)


@dataclass
class ImagenetSource:
    """Classes (sorted wnids) and the samples of each split, checked."""

    layout: str
    classes: list[str]
    splits: dict[str, list[Sample]]
    dropped_val: int = 0

    def counts(self) -> dict[str, int]:
        return {"classes": len(self.classes), **{s: len(v) for s, v in self.splits.items()}}


class _Archive:
    """Random reads from an uncompressed tar on disk (``os.pread``: thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def reader(self, offset: int, size: int) -> Callable[[], bytes]:
        return lambda: self._read(offset, size)

    def _read(self, offset: int, size: int) -> bytes:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise SourceError(f"{self.path}: truncated archive (short read at byte {offset})")
        return data


def _members(path: Path, fileobj=None, base: int = 0, end: int | None = None):
    """``(member, absolute data offset)`` of the files in a tar; :class:`SourceError` naming
    ``path`` when it is truncated or no tar."""
    end = path.stat().st_size if end is None else end
    try:
        with tarfile.open(path if fileobj is None else None, mode="r:", fileobj=fileobj) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if base + member.offset_data + member.size > end:
                    raise SourceError(
                        f"{path}: truncated archive ({member.name} ends past the end of the file)"
                    )
                yield member, base + member.offset_data, tar
            if base + tar.offset + 2 * tarfile.BLOCKSIZE > end:  # no end-of-archive blocks
                raise SourceError(f"{path}: truncated archive (it ends inside a header)")
    except (tarfile.TarError, EOFError) as exc:
        raise SourceError(f"{path}: truncated or not a tar archive ({exc})") from exc


def _official_train(path: Path) -> dict[str, list[tuple[str, Callable[[], bytes]]]]:
    archive = _Archive(path)
    by_class: dict[str, list[tuple[str, Callable[[], bytes]]]] = {}
    for member, offset, outer in _members(path):
        if not member.name.endswith(".tar"):
            raise SourceError(f"{path}: {member.name} is not a per-class <wnid>.tar")
        images = by_class.setdefault(Path(member.name).stem, [])
        inner = outer.extractfile(member)  # seekable: only the inner headers are read
        for im, at, _ in _members(path, inner, base=offset, end=offset + member.size):
            images.append((Path(im.name).name, archive.reader(at, im.size)))
    return by_class


def _devkit(src: Path) -> tuple[list[int], dict[int, str]]:
    """Val labels (ILSVRC2012 ids, line n = image n) and the id -> wnid map."""
    folder, tgz = src / DEVKIT, src / f"{DEVKIT}.tar.gz"
    if folder.is_dir():
        gt_name, truth = folder / GROUND_TRUTH, (folder / GROUND_TRUTH).read_bytes()
        meta = (folder / META).read_bytes()
    elif tgz.is_file():
        gt_name = tgz / GROUND_TRUTH
        try:
            with tarfile.open(tgz, "r:gz") as tar:
                truth = tar.extractfile(f"{DEVKIT}/{GROUND_TRUTH}").read()  # type: ignore[union-attr]
                meta = tar.extractfile(f"{DEVKIT}/{META}").read()  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError, KeyError, OSError) as exc:
            raise SourceError(f"{tgz}: cannot read the devkit ({exc})") from exc
    else:
        raise SourceError(f"devkit not found: {tgz} (or the folder {folder})")
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy comes with scikit-learn
        raise SourceError("reading the devkit's meta.mat needs scipy (pip install scipy)") from exc
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    ids = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    labels = []
    for n, line in enumerate(truth.decode().split(), 1):
        if not line.isdigit() or int(line) not in ids:
            raise SourceError(f"{gt_name}: line {n} holds {line!r}, no ILSVRC2012 class id")
        labels.append(int(line))
    return labels, ids


def _official(src: Path, subset: bool) -> tuple[dict, dict, str]:
    train = _official_train(src / TRAIN_TAR)
    val_path = src / VAL_TAR
    labels, ids = _devkit(src)
    gt = f"{DEVKIT} {GROUND_TRUTH}"
    archive = _Archive(val_path)
    val: dict[str, list] = {}
    images = 0
    for member, offset, _ in _members(val_path):
        match = _VAL_NAME.search(member.name)
        if match is None:
            raise SourceError(f"{val_path}: {member.name} is not an ILSVRC2012_val_<n>.JPEG")
        n = int(match.group(1))
        if n > len(labels):
            raise SourceError(
                f"{gt}: lists {len(labels)} labels, but {val_path} holds {member.name} "
                "(the label file does not match the val images)"
            )
        images += 1
        val.setdefault(ids[labels[n - 1]], []).append(
            (Path(member.name).name, archive.reader(offset, member.size))
        )
    if images != len(labels) and not subset:
        raise SourceError(
            f"{gt}: lists {len(labels)} labels, but {val_path} holds {images} images "
            "(the label file does not match the val images; --subset for a part of them)"
        )
    return train, val, "official"


def _files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return [e.name for e in entries if e.is_file() and _IMAGE.search(e.name)]


def _kaggle(src: Path, subset: bool) -> tuple[dict, dict, str]:
    root = src / KAGGLE_ROOT
    train: dict[str, list] = {}
    for wnid in sorted(os.listdir(root / "train")):
        folder = root / "train" / wnid
        if folder.is_dir():
            train[wnid] = [(n, (folder / n).read_bytes) for n in _files(folder)]
    csv_path = src / KAGGLE_CSV
    if not csv_path.is_file():
        raise SourceError(f"val labels not found: {csv_path}")
    labels: dict[str, str] = {}
    with open(csv_path, newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), 2):
            try:
                labels[row["ImageId"]] = row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError) as exc:
                raise SourceError(
                    f"{csv_path}: line {row_no} is not ImageId,PredictionString"
                ) from exc
    val_folder = root / "val"
    names = _files(val_folder)
    val: dict[str, list] = {}
    for name in names:
        stem = name.rsplit(".", 1)[0]
        if stem not in labels:
            raise SourceError(
                f"{csv_path}: has no label for {val_folder / name} "
                "(the label file does not match the val images)"
            )
        val.setdefault(labels[stem], []).append((name, (val_folder / name).read_bytes))
    extra = len(labels) - len(names)
    if extra and not subset:
        raise SourceError(
            f"{csv_path}: lists {len(labels)} images, but {val_folder} holds {len(names)} "
            "(the label file does not match the val images; --subset for a part of them)"
        )
    return train, val, "kaggle"


def read_imagenet(src: str | Path, *, subset: bool = False) -> ImagenetSource:
    """The checked samples of ImageNet under ``src`` (official archives or Kaggle layout)."""
    src = Path(src)
    if (src / TRAIN_TAR).is_file():
        train, val, layout = _official(src, subset)
    elif (src / KAGGLE_ROOT / "train").is_dir():
        train, val, layout = _kaggle(src, subset)
    else:
        raise SourceError(
            f"{src}: neither the official archives ({TRAIN_TAR}, {VAL_TAR}, {DEVKIT}.tar.gz) "
            f"nor the Kaggle layout ({KAGGLE_ROOT}/train, {KAGGLE_CSV})"
        )
    classes = sorted(w for w, images in train.items() if images)
    index = {w: i for i, w in enumerate(classes)}
    unknown = sorted(set(val) - set(index))
    dropped = 0
    if unknown and not subset:
        raise SourceError(
            f"{src}: val labels name classes with no train images: {unknown[:5]} "
            "(the label file does not match; --subset for a part of ImageNet)"
        )
    for wnid in unknown:
        dropped += len(val.pop(wnid))
    splits = {
        split: [
            Sample(name, index[wnid], read)
            for wnid in classes
            for name, read in sorted(by_class.get(wnid, []), key=lambda item: item[0])
        ]
        for split, by_class in (("train", train), ("val", val))
    }
    source = ImagenetSource(layout, classes, splits, dropped)
    if not subset:
        found = source.counts()
        if found != FULL:
            raise SourceError(
                f"{src}: holds {found}, not ILSVRC2012's {FULL}; pass --subset to prepare a "
                "deliberate part of it"
            )
    return source
