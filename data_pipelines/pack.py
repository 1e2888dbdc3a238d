"""Webdataset tar shards that DALI streams: writing them (resumably, to a folder or an
object-store prefix) and reading their manifest.

``pack_imagefolder(root, out)`` (``bioprop data pack``) and ``bioprop data prepare ...
--format shards`` write ``out/{train,val}/shard-00000.tar`` (+ ``.idx``, DALI's v1.2 index,
so readers start without scanning the tars) and ``out/wds.json`` (format, class names, sample
counts, shard files). Each sample is ``<key>.jpg`` (the original file's bytes, whatever its
real format: the decoder sniffs it) and, for a classification set, ``<key>.cls`` (the class
index, int64 little-endian); a COCO set's samples carry their boxes instead
(:mod:`data_pipelines.coco_pack`). ``<key>`` is the sample's position in the split's sorted
list. Train
samples are written in a seed-shuffled order, since a tar is read sequentially; val stays
sorted. Shards are deterministic (same samples, same bytes: member times are 0) and each
is put whole, its index after it, so :func:`write_shards` skips the shards whose index
exists: an interrupted run continues, never writes a shard twice, and ends with the shards
an uninterrupted run writes. Each split's ``layout.json`` (shard size, seed, sample count)
is written before its first shard; a resumed run with another layout is refused, since its
shards would hold other samples. ``wds.json`` is written last. The loader reads a packed root
when ``wds.json`` is present in it (``data.kind: imagefolder``), local or ``s3://``.
"""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import data_pipelines.objstore as objstore
from data_pipelines.folder import index_folder
from data_pipelines.location import is_uri, join_uri
from data_pipelines.output import Target, for_each

__all__ = [
    "FORMATS",
    "MANIFEST",
    "PackedIndex",
    "is_packed",
    "packed_kind",
    "iter_packed_images",
    "pack_imagefolder",
    "read_packed",
    "write_index",
    "write_shards",
]

log = logging.getLogger(__name__)

MANIFEST = "wds.json"
#: ``wds.json``'s ``format`` for each data kind that reads packed shards
FORMATS = {"imagefolder": "bioprop-wds-1", "coco": "bioprop-coco-wds-1"}
Reader = Callable[[], bytes]  # the bytes of one image
Members = int | Mapping[str, bytes]  # a class index, or a sample's other members by extension


@dataclass(frozen=True)
class PackedIndex:
    """One packed split: tar shards, their index files (paths or ``s3://`` URIs), sample
    count, class names (a COCO set's: category names, with ``category_ids``)."""

    tars: list[Path | str]
    indexes: list[Path | str]
    count: int
    classes: list[str]
    category_ids: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.count


def is_packed(root: str | Path) -> bool:
    if is_uri(root):
        return objstore.exists(join_uri(str(root), MANIFEST))
    return (Path(root) / MANIFEST).is_file()


def _manifest(root: str | Path) -> tuple[str, dict]:
    """``(where, contents)`` of ``root``'s ``wds.json``, local or on object storage."""
    if is_uri(root):
        where = join_uri(str(root), MANIFEST)
        return where, json.loads(objstore.read_bytes(where))
    where = str(Path(root) / MANIFEST)
    return where, json.loads(Path(where).read_text())


def _kind(manifest: dict) -> str:
    """The data kind of a manifest's ``format`` (the format itself when unknown)."""
    found = manifest.get("format", FORMATS["imagefolder"])
    return next((k for k, f in FORMATS.items() if f == found), found)


def packed_kind(root: str | Path) -> str:
    """The data kind whose shards ``root``'s ``wds.json`` lists (``imagefolder`` or ``coco``)."""
    return _kind(_manifest(root)[1])


def read_packed(root: str | Path, split: str, *, kind: str = "imagefolder") -> PackedIndex:
    """A split of the packed set at ``root``; FileNotFoundError naming a missing shard,
    ValueError naming ``wds.json`` when it holds another kind's set."""
    where, manifest = _manifest(root)
    other = _kind(manifest)
    if other != kind:
        raise ValueError(f"{where} holds a packed {other} set; data.kind must be {other!r}")
    if is_uri(root):
        present = set(objstore.list_files(join_uri(str(root), split)))
        at = lambda name: join_uri(str(root), name)  # noqa: E731
        found = lambda name: name.split("/", 1)[-1] in present  # noqa: E731
    else:
        at = lambda name: Path(root) / name  # noqa: E731
        found = lambda name: (Path(root) / name).is_file()  # noqa: E731
    if split not in manifest["splits"]:
        raise FileNotFoundError(f"{where} has no split {split!r}")
    entry = manifest["splits"][split]
    for name in entry["shards"]:
        for file in (name, name[:-4] + ".idx"):
            if not found(file):
                raise FileNotFoundError(f"packed shard listed in {where} is missing: {at(file)}")
    return PackedIndex(
        tars=[at(name) for name in entry["shards"]],
        indexes=[at(name[:-4] + ".idx") for name in entry["shards"]],
        count=entry["count"],
        classes=manifest["classes"],
        category_ids=tuple(manifest.get("category_ids", ())),
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_index(tar_path: Path, out: Path | None = None) -> int:
    """Write DALI's v1.2 index of a webdataset tar to ``out`` (default ``<tar>.idx``);
    returns its sample count."""
    samples: list[list[str]] = []
    last = None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            key, ext = base.split(".", 1)
            if key != last:
                samples.append([])
                last = key
            samples[-1].append(f"{ext} {member.offset_data} {member.size} {member.name}")
    lines = [f"v1.2 {len(samples)}"] + [" ".join(parts) for parts in samples]
    (out or tar_path.with_suffix(".idx")).write_text("\n".join(lines) + "\n")
    return len(samples)


def write_shards(
    samples: Sequence[tuple[Reader, Members]],
    target: Target,
    split: str,
    *,
    shard_size: int = 1000,
    seed: int = 0,
    done: set[str] | None = None,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Write one split's ``(read, label)`` samples as shards under ``target``; returns the
    shard names (relative). ``label`` is a class index (the ``.cls`` member) or the sample's
    other members, ``{extension: bytes}``. ``done`` (``target.existing()``) holds what an earlier run left:
    a shard whose ``.idx`` is there is complete and skipped."""
    done = target.existing() if done is None else done
    _check_layout(
        target, split, done, {"shard_size": shard_size, "seed": seed, "samples": len(samples)}
    )
    order = list(range(len(samples)))
    if split == "train":
        random.Random(seed).shuffle(order)
    chunks = [order[i : i + shard_size] for i in range(0, len(order), shard_size)]
    names = [f"{split}/shard-{n:05d}.tar" for n in range(len(chunks))]

    def one(name: str, chunk: list[int]) -> None:
        idx = name[:-4] + ".idx"
        if name in done and idx in done:
            if progress is not None:
                progress(len(chunk))
            return
        tmp = target.scratch(name)
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in chunk:
                read, label = samples[i]
                key = f"{i:08d}"
                _add(tar, f"{key}.jpg", read())
                if isinstance(label, int):
                    label = {"cls": label.to_bytes(8, "little", signed=True)}
                for ext, data in label.items():
                    _add(tar, f"{key}.{ext}", data)
        tmp_idx = target.scratch(idx)
        write_index(tmp, tmp_idx)
        target.put_file(name, tmp)
        target.put_file(idx, tmp_idx)  # last: the shard counts as written once this is
        if progress is not None:
            progress(len(chunk))

    for_each(lambda job: one(*job), zip(names, chunks, strict=True), threads=threads)
    return names


LAYOUT = "layout.json"  # per split: what decides which sample lands in which shard


def _check_layout(target: Target, split: str, done: set[str], layout: dict[str, int]) -> None:
    """Record the split's shard layout (shard size, seed, sample count) before its first
    shard, or, resuming, refuse a run whose layout differs from the recorded one: its
    shards would hold other samples than the ones written, so samples would be lost or
    doubled. ValueError naming the file and both layouts."""
    rel = f"{split}/{LAYOUT}"
    describe = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items()))  # noqa: E731
    if rel in done:
        found = json.loads(target.get(rel))
        if found != layout:
            raise ValueError(
                f"{target.where(rel)}: these shards were begun with {describe(found)}; this "
                f"run has {describe(layout)}. Resume with the same --shard-size, --seed and "
                "source, or write to an empty destination"
            )
        return
    if any(name.startswith(f"{split}/shard-") for name in done):
        raise ValueError(
            f"{target.where(split)} holds shards that record no layout ({LAYOUT}); they may "
            "not match this run's: write to an empty destination"
        )
    target.put(rel, json.dumps(layout).encode())


def write_manifest(
    target: Target,
    classes: list[str],
    splits: dict[str, tuple[list[str], int]],
    *,
    kind: str = "imagefolder",
    **extra: object,
) -> None:
    """``wds.json``: the format, class names, each split's shards and sample count, and
    ``extra`` (a COCO set's category ids and annotation files)."""
    manifest = {
        "format": FORMATS[kind],
        "classes": classes,
        "splits": {s: {"shards": names, "count": n} for s, (names, n) in splits.items()},
        **extra,
    }
    target.put(MANIFEST, json.dumps(manifest, indent=1).encode())


def pack_imagefolder(
    root: str | Path,
    out: str | Path,
    *,
    shard_size: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path | str:
    """Pack ``root/{train,val}`` into webdataset shards under ``out`` (a folder or an
    ``s3://`` prefix); returns ``out``."""
    root, target = Path(root), Target(out)
    target.check()
    train = index_folder(root / "train")
    splits = {"train": train, "val": index_folder(root / "val", classes=train.classes)}
    done = target.existing()
    written = {}
    for split, index in splits.items():
        samples = [
            ((index.root / f).read_bytes, label)
            for f, label in zip(index.files, index.labels, strict=True)
        ]
        names = write_shards(
            samples, target, split, shard_size=shard_size, seed=seed, done=done, progress=progress
        )
        written[split] = (names, len(samples))
    write_manifest(target, train.classes, written)
    log.info("packed %s into %s", root, target)
    return target.dest


def iter_packed_images(index: PackedIndex) -> Iterator[tuple[str, bytes]]:
    """``("shard.tar:member", bytes)`` of every image in a packed split."""
    for tar_path in index.tars:
        remote = is_uri(tar_path)
        source = io.BytesIO(objstore.read_bytes(str(tar_path))) if remote else None
        with tarfile.open(None if remote else tar_path, fileobj=source) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    fileobj = tar.extractfile(member)
                    if fileobj is not None:
                        yield f"{tar_path}:{member.name}", fileobj.read()
