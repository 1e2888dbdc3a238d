"""Packing an ImageNet-layout folder into webdataset tar shards that DALI streams.

``pack_imagefolder(root, out)`` writes ``out/{train,val}/shard-00000.tar`` (+ ``.idx``,
DALI's v1.2 index, so readers start without scanning the tars) and ``out/wds.json``
(class names, sample counts, shard files). Each sample is two members: ``<key>.jpg``
(the original file's bytes, whatever its real format: the decoder sniffs it) and
``<key>.cls`` (the class index, int64 little-endian). Train samples are written in a
seed-shuffled order, since a tar is read sequentially; val stays sorted. The loader reads
a packed root when ``wds.json`` is present in it (``data.kind: imagefolder``).
"""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data_pipelines.folder import index_folder

__all__ = [
    "MANIFEST",
    "PackedIndex",
    "is_packed",
    "iter_packed_images",
    "pack_imagefolder",
    "read_packed",
    "write_index",
]

log = logging.getLogger(__name__)

MANIFEST = "wds.json"


@dataclass(frozen=True)
class PackedIndex:
    """One packed split: tar shards, their index files, sample count, class names."""

    tars: list[Path]
    indexes: list[Path]
    count: int
    classes: list[str]

    def __len__(self) -> int:
        return self.count


def is_packed(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_packed(root: str | Path, split: str) -> PackedIndex:
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text())
    if split not in manifest["splits"]:
        raise FileNotFoundError(f"{root / MANIFEST} has no split {split!r}")
    entry = manifest["splits"][split]
    tars = [root / name for name in entry["shards"]]
    for tar in tars:
        if not tar.is_file():
            raise FileNotFoundError(f"packed shard listed in {root / MANIFEST} is missing: {tar}")
    return PackedIndex(
        tars=tars,
        indexes=[t.with_suffix(".idx") for t in tars],
        count=entry["count"],
        classes=manifest["classes"],
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_index(tar_path: Path) -> int:
    """Write DALI's v1.2 index (``<tar>.idx``) of a webdataset tar; returns its sample count."""
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
    tar_path.with_suffix(".idx").write_text("\n".join(lines) + "\n")
    return len(samples)


def pack_imagefolder(
    root: str | Path,
    out: str | Path,
    *,
    shard_size: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Pack ``root/{train,val}`` into webdataset shards under ``out``; returns ``out``."""
    root, out = Path(root), Path(out)
    train = index_folder(root / "train")
    splits = {"train": train, "val": index_folder(root / "val", classes=train.classes)}
    manifest: dict = {"format": "bioprop-wds-1", "classes": train.classes, "splits": {}}
    for split, index in splits.items():
        order = list(range(len(index)))
        if split == "train":
            random.Random(seed).shuffle(order)
        (out / split).mkdir(parents=True, exist_ok=True)
        shards = []
        for start in range(0, len(order), shard_size):
            name = f"{split}/shard-{start // shard_size:05d}.tar"
            with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in order[start : start + shard_size]:
                    key = f"{i:08d}"
                    _add(tar, f"{key}.jpg", (index.root / index.files[i]).read_bytes())
                    _add(tar, f"{key}.cls", index.labels[i].to_bytes(8, "little", signed=True))
            written = write_index(out / name)
            shards.append(name)
            if progress is not None:
                progress(written)
        manifest["splits"][split] = {"shards": shards, "count": len(order)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("packed %s into %s", root, out)
    return out


def iter_packed_images(index: PackedIndex) -> Iterator[tuple[str, bytes]]:
    """``("shard.tar:member", bytes)`` of every image in a packed split."""
    for tar_path in index.tars:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    fileobj = tar.extractfile(member)
                    if fileobj is not None:
                        yield f"{tar_path}:{member.name}", fileobj.read()
