"""``bioprop data prepare``: data sets as users hold them, written as the loaders read them.

- :func:`prepare_imagenet`: the official ILSVRC2012 archives or the Kaggle layout
  (:func:`data_pipelines.imagenet.read_imagenet`, which checks them) to the ``ImageFolder``
  layout (``train/<wnid>/*``, ``val/<wnid>/*``, the default) or to webdataset shards with
  their index and ``wds.json`` (:func:`data_pipelines.pack.write_shards`), in a folder or
  under an ``s3://`` prefix (:class:`data_pipelines.output.Target`).
- :func:`prepare_coco`: the official COCO 2017 zips (``train2017.zip``, ``val2017.zip``,
  ``annotations_trainval2017.zip``), their annotations checked against the images, to the
  folder the ``coco`` kind reads (``train2017/``, ``val2017/``,
  ``annotations/instances_{train,val}2017.json``; the default) or to webdataset shards of
  images with their boxes (:mod:`data_pipelines.coco_pack`), in a folder or under an
  ``s3://`` prefix.

Both resume: every file is put whole (a file present is complete) and what is present is
skipped, so a run stopped part-way continues where it stopped and ends with the files a
single run writes; ``prepared.json`` (or ``wds.json``) is written last.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_pipelines.imagenet import SourceError, read_imagenet
from data_pipelines.location import is_uri
from data_pipelines.output import Target, for_each
from data_pipelines.pack import write_manifest, write_shards

__all__ = ["COCO_FULL", "FORMATS", "prepare_coco", "prepare_imagenet"]

log = logging.getLogger(__name__)

FORMATS = ("folder", "shards")
DONE = "prepared.json"
#: COCO 2017 detection: images per split
COCO_FULL = {"train": 118_287, "val": 5_000}
COCO_ZIPS = {"train": "train2017.zip", "val": "val2017.zip"}
COCO_ANNOTATIONS = "annotations_trainval2017.zip"

Progress = Callable[[int], None]


def _put_all(
    items: list[tuple[str, Callable[[], bytes]]],
    target: Target,
    done: set[str],
    *,
    threads: int,
    progress: Progress | None,
) -> None:
    """Put each ``(relative name, read)`` not in ``done``; ``progress(1)`` per item."""

    def one(item: tuple[str, Callable[[], bytes]]) -> None:
        rel, read = item
        if rel not in done:
            target.put(rel, read())
        if progress is not None:
            progress(1)

    for_each(one, items, threads=threads)


def _kept(done: set[str]) -> int:
    """How many of the written files an earlier (interrupted) run had already put: a
    resumed prepare keeps them rather than write them again."""
    return len(done - {DONE})


def prepare_imagenet(
    src: str | Path,
    dest: str | Path,
    *,
    fmt: str = "folder",
    subset: bool = False,
    shard_size: int = 1000,
    seed: int = 0,
    threads: int = 4,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Read and check ImageNet under ``src``, write it to ``dest`` as ``fmt`` (``folder`` or
    ``shards``); returns what was written (layout, counts, destination, and ``kept``: the
    files an interrupted earlier run had written, kept as they were)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    target = Target(dest)
    target.check()
    source = read_imagenet(src, subset=subset)
    counts = source.counts()
    if on_total is not None:
        on_total(counts["train"] + counts["val"])
    done = target.existing()
    if fmt == "shards":
        written = {}
        shards = dict(shard_size=shard_size, seed=seed, done=done, threads=threads)
        for split, samples in source.splits.items():
            samples = [(s.read, s.label) for s in samples]
            names = write_shards(samples, target, split, progress=progress, **shards)
            written[split] = (names, len(samples))
        write_manifest(target, source.classes, written)
    else:
        items = [
            (f"{split}/{source.classes[s.label]}/{s.name}", s.read)
            for split, samples in source.splits.items()
            for s in samples
        ]
        _put_all(items, target, done, threads=threads, progress=progress)
    summary = {
        "dataset": "imagenet",
        "source": str(src),
        "layout": source.layout,
        "format": fmt,
        "subset": subset,
        "counts": counts,
        "val_left_out": source.dropped_val,
        "dest": str(target),
        "kept": _kept(done),
    }
    target.put(DONE, json.dumps({**summary, "classes": source.classes}, indent=1).encode())
    return summary


def _zip(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
        bad = archive.testzip() if path.stat().st_size < 1 << 20 else None  # CRCs of small ones
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{path}: truncated or not a zip archive ({exc})") from exc
    if bad is not None:
        raise SourceError(f"{path}: {bad} is corrupt (CRC mismatch)")
    return archive


def prepare_coco(
    src: str | Path,
    dest: str | Path,
    *,
    fmt: str = "folder",
    subset: bool = False,
    shard_size: int = 1000,
    seed: int = 0,
    threads: int = 4,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Check the official COCO 2017 zips under ``src`` and write them to ``dest`` as ``fmt``
    (``folder``, or ``shards``: images with their boxes); returns what was written
    (``kept`` as for :func:`prepare_imagenet`)."""
    from data_pipelines.coco import check_annotations, index_coco
    from data_pipelines.coco_pack import write_coco_manifest, write_coco_split

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "folder" and is_uri(dest):
        raise ValueError(
            f"{dest}: a COCO folder is read by DALI's COCO reader from a file system; for "
            "object storage prepare it with --format shards"
        )
    src, target = Path(src), Target(dest)
    target.check()
    for name in (*COCO_ZIPS.values(), COCO_ANNOTATIONS):
        if not (src / name).is_file():
            raise SourceError(f"COCO archive not found: {src / name}")
    annotations = _zip(src / COCO_ANNOTATIONS)
    docs, archives = {}, {}
    for split, zip_name in COCO_ZIPS.items():
        member = f"annotations/instances_{split}2017.json"
        try:
            docs[split] = json.loads(annotations.read(member))
        except KeyError:
            raise SourceError(f"{src / COCO_ANNOTATIONS}: has no {member}") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise SourceError(f"{src / COCO_ANNOTATIONS}: cannot read {member} ({exc})") from exc
        check_annotations(docs[split], f"{src / COCO_ANNOTATIONS} {member}", src / zip_name)
        archives[split] = _zip(src / zip_name)
        names = set(archives[split].namelist())
        missing = [
            img["file_name"]
            for img in docs[split].get("images", [])
            if f"{split}2017/{img['file_name']}" not in names
        ]
        if missing:
            raise SourceError(
                f"{src / COCO_ANNOTATIONS} {member}: names {len(missing)} image(s) that "
                f"{src / zip_name} does not hold, e.g. {missing[:3]}"
            )
        found = len(docs[split].get("images", []))
        if not subset and found != COCO_FULL[split]:
            raise SourceError(
                f"{src / COCO_ANNOTATIONS} {member}: lists {found} images, not COCO 2017's "
                f"{COCO_FULL[split]}; pass --subset to prepare a deliberate part of it"
            )
    if on_total is not None:
        on_total(sum(len(d["images"]) for d in docs.values()))
    done = target.existing()
    written, annotation_files = {}, {}
    for split, doc in docs.items():
        archive = archives[split]

        def reader(name: str, archive: zipfile.ZipFile = archive, split: str = split):
            member = f"{split}2017/{name}"

            def read() -> bytes:
                try:
                    return archive.read(member)  # ZipFile reads are thread-safe
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise SourceError(f"{archive.filename}: cannot read {member} ({exc})") from exc

            return read

        if fmt == "shards":
            shards = dict(shard_size=shard_size, seed=seed, done=done, threads=threads)
            written[split] = write_coco_split(
                doc, reader, target, split, progress=progress, **shards
            )
        else:
            items = [
                (f"{split}2017/{img['file_name']}", reader(img["file_name"]))
                for img in sorted(doc["images"], key=lambda img: img["id"])
            ]
            _put_all(items, target, done, threads=threads, progress=progress)
        ann = annotation_files[split] = f"annotations/instances_{split}2017.json"
        if ann not in done:
            target.put(ann, annotations.read(ann))
    if fmt == "shards":
        write_coco_manifest(target, docs, written, annotation_files)
    else:
        for split in COCO_ZIPS:
            index_coco(Path(str(target)), split)  # every image written where the kind reads
    counts = {split: len(doc["images"]) for split, doc in docs.items()}
    summary = {
        "dataset": "coco",
        "source": str(src),
        "format": fmt,
        "counts": counts,
        "dest": str(target),
        "kept": _kept(done),
    }
    target.put(DONE, json.dumps(summary, indent=1).encode())
    return summary
