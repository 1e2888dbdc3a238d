"""Data kinds: one registered object per ``data.kind`` (``imagefolder``, ``synthetic``,
``digits``, ``coco``), each saying how to prepare a data section on the driver, build a
loader for one split and shard on a worker, and count its classes.

:data:`KINDS` maps the name to its :class:`DataKind`; :func:`register_kind` fills it and
refuses names ``data_pipelines/catalogue.py`` (the spec's source of kinds) does not list.
Adding a kind is one class here (or in its own module, imported below) plus its descriptor
there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data_pipelines.catalogue import KIND_INFO
from data_pipelines.location import is_uri, join_uri
from data_pipelines.registry import InstanceRegistry
from data_pipelines.synth import SYNTH_VERSION, atomic_build, synth_coco, synth_imagenet

__all__ = ["KINDS", "DataKind", "default_device_id", "get_kind", "register_kind", "synthetic_root"]


class DataKind:
    """How one ``data.kind`` is prepared, loaded and counted."""

    def prepare(self, data: Any, *, task: str) -> Any:
        """The data section resolved on the driver (``root`` filled and checked)."""
        return data.model_copy()

    def loader(
        self,
        data: Any,
        split: str,
        *,
        batch_size: int,
        shard_id: int,
        num_shards: int,
        seed: int,
        **options: Any,
    ) -> Iterable:
        """Batches of one split and shard of a prepared section, ``len()`` = steps."""
        raise NotImplementedError

    def num_classes(self, data: Any) -> int:
        """The class count of a prepared section."""
        raise NotImplementedError

    def split_size(self, data: Any, split: str) -> int:
        """How many images (samples) ``split`` of a prepared section holds."""
        raise NotImplementedError


#: ``@register_kind(name)`` on a :class:`DataKind` subclass registers one instance of it;
#: ``get_kind(name)`` returns it (NotImplementedError naming the known kinds otherwise).
KINDS: InstanceRegistry = InstanceRegistry(
    "data kind",
    KIND_INFO,
    lambda name, known: NotImplementedError(
        f"data.kind {name!r} is not supported; known kinds: {known}"
    ),
    where="data_pipelines/catalogue.py",
)
register_kind = KINDS.register
get_kind = KINDS.lookup


def default_device_id() -> int | None:
    """The CUDA device DALI decodes on (``mixed``), or None for CPU pipelines."""
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else None


def synthetic_root(data: Any, base: str | Path | None = None, *, task: str = "classify") -> Path:
    """Default cache folder of a synthetic set: ``<base>/bioprop-runs/data/synthetic-<hash>``
    (``synthetic-coco-<hash>`` for detection); without ``base``, under ``$BIOPROP_DATA_CACHE``
    (a folder every Ray node mounts, on a cluster) when set, else the working directory."""
    s = data.synth
    if task == "detect":
        params, prefix = {"images": s.images, "size": s.size}, "synthetic-coco"
    else:
        params = {"classes": s.classes, "train": s.train_per_class, "val": s.val_per_class}
        params, prefix = {**params, "size": s.size}, "synthetic"
    params["version"] = SYNTH_VERSION
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    cache = os.environ.get("BIOPROP_DATA_CACHE", "").strip()
    if base is None and cache:
        folder = Path(cache)
    else:
        folder = Path(base or Path.cwd()) / "bioprop-runs" / "data"
    return (folder / f"{prefix}-{digest}").expanduser().absolute()


# the error texts more than one kind raises --------------------------------------------
def prepared_root(data: Any) -> Path | str:
    """``data.root`` of a prepared section, a ``Path`` or an ``s3://`` URI (ValueError when
    :func:`prepare` has not run)."""
    if data.root is None:
        raise ValueError("data.root is not set: call data_pipelines.prepare(data) first")
    return data.root if is_uri(data.root) else Path(data.root)


def check_remote_root(uri: str, kind: str = "imagefolder") -> None:
    """Preflight of a root on object storage, on the driver: the bucket answers with the
    environment's credentials, the prefix holds ``wds.json`` (of ``kind``'s format) and every
    shard it lists, or (``imagefolder``) ``train/`` and ``val/`` class folders, and an object
    can be read. :class:`data_pipelines.objstore.DataRootError` (or FileNotFoundError,
    ValueError) names the URI."""
    from data_pipelines.folder import index_split
    from data_pipelines.objstore import check_root, read_bytes
    from data_pipelines.pack import MANIFEST, read_packed

    files = check_root(uri)
    if MANIFEST in files:
        for split in ("train", "val"):
            read_packed(uri, split, kind=kind)  # reads wds.json: an object we may get
        return
    if kind == "coco":
        raise FileNotFoundError(
            f"{uri}/{MANIFEST} not found: a COCO set on object storage is read as packed "
            "shards (bioprop data prepare coco --format shards, or bioprop data pack)"
        )
    for split in ("train", "val"):
        if not any(key.startswith(f"{split}/") for key in files):
            raise FileNotFoundError(f"split folder not found: {uri}/{split} (nor {uri}/{MANIFEST})")
    train = index_split(uri, "train")
    index_split(uri, "val", classes=train.classes)
    read_bytes(f"{train.root}/{train.files[0]}")


def existing_root(data: Any) -> Path:
    """``data.root`` made absolute; FileNotFoundError naming it when it is no folder."""
    root = Path(data.root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root not found: {root}")
    return root


def train_steps(
    split: str, images: int, *, num_shards: int, batch_size: int, where: Path | str
) -> int | None:
    """Steps per epoch of a train shard (ValueError naming ``where`` when it is below one);
    None for ``val`` (every image once, the last batch padded)."""
    if split != "train":
        return None
    steps = (images // num_shards) // batch_size
    if steps == 0:
        raise ValueError(
            f"train shard of {images // num_shards} images ({where}) is smaller "
            f"than batch_size {batch_size}"
        )
    return steps


def shard_plan(
    data: Any,
    split: str,
    images: int,
    *,
    where: Path | str,
    batch_size: int,
    shard_id: int,
    num_shards: int,
    seed: int,
) -> tuple[int | None, dict[str, Any]]:
    """Steps per epoch of this split's shard (:func:`train_steps`) and the DALI pipeline
    arguments every kind passes alike (batch, shard, seed, threads, device)."""
    steps = train_steps(split, images, num_shards=num_shards, batch_size=batch_size, where=where)
    options = dict(
        batch_size=batch_size,
        shard_id=shard_id,
        num_shards=num_shards,
        seed=seed,
        num_threads=data.num_threads,
        device_id=default_device_id(),
    )
    return steps, options


# the kinds -------------------------------------------------------------------------------
def _augment(data: Any) -> str:
    """``data.augment``, or the kind's default (``DataSpec.augmentation``)."""
    augment = getattr(data, "augmentation", None) or getattr(data, "augment", None)
    return augment or ("imagenet" if data.kind in ("imagefolder", "synthetic") else "none")


def _val_resize(data: Any) -> int:
    """Shorter side before the val center crop: ImageNet's 256/224 with ``imagenet``
    augmentation, the crop itself (the whole image) with ``cifar`` and ``none``."""
    if data.val_resize:
        return data.val_resize
    if _augment(data) == "imagenet":
        return round(data.image_size * 256 / 224)
    return data.image_size


@register_kind("imagefolder")
class ImageFolder(DataKind):
    """An ImageNet-layout folder (``train/<class>/*.jpg``, ``val/<class>/*.jpg``) or its
    packed webdataset shards (:mod:`data_pipelines.pack`), through the DALI classification
    pipeline."""

    def prepare(self, data: Any, *, task: str) -> Any:
        if is_uri(data.root):
            check_remote_root(data.root)
            return data.model_copy()
        from data_pipelines.pack import is_packed, read_packed

        root = existing_root(data)
        for split in ("train", "val"):
            if is_packed(root):
                read_packed(root, split)  # every shard listed is there, of this kind
            elif not (root / split).is_dir():
                raise FileNotFoundError(f"split folder not found: {root / split}")
        return data.model_copy(update={"root": root})

    def loader(self, data, split, *, batch_size, shard_id, num_shards, seed, **options):
        from data_pipelines.check import explain_decode_error
        from data_pipelines.folder import classify_pipeline, index_sources, index_split, shuffled
        from data_pipelines.loader import DaliLoader, classify_batch
        from data_pipelines.pack import is_packed, iter_packed_images, read_packed

        shard = dict(batch_size=batch_size, shard_id=shard_id, num_shards=num_shards, seed=seed)
        root = prepared_root(data)
        train = split == "train"
        if is_packed(root):
            index = read_packed(root, split)
            if data.cache and isinstance(root, str):  # shards on object storage, copied
                from data_pipelines.shard_cache import stage

                index = stage(index, root, split)
            sources = lambda: iter_packed_images(index)  # noqa: E731
        else:
            classes = index_split(root, "train").classes if split == "val" else None
            index = index_split(root, split, classes=classes)
            if train:
                index = shuffled(index, seed)
            sources = lambda: index_sources(index)  # noqa: E731
        where = join_uri(root, split) if isinstance(root, str) else root / split
        steps, options = shard_plan(data, split, len(index), where=where, **shard)
        pipe = classify_pipeline(
            index,
            train=train,
            image_size=data.image_size,
            val_resize=_val_resize(data),
            augment=_augment(data),
            **options,
        )
        return DaliLoader(
            pipe,
            output_map=["images", "labels"],
            steps=steps,
            convert=classify_batch,
            on_error=lambda exc: explain_decode_error(exc, sources()),
        )

    def num_classes(self, data: Any) -> int:
        from data_pipelines.folder import index_split, list_classes
        from data_pipelines.pack import is_packed, read_packed

        root = prepared_root(data)
        if is_packed(root):
            return len(read_packed(root, "train").classes)
        if isinstance(root, str):
            return len(index_split(root, "train").classes)
        return len(list_classes(root / "train"))

    def split_size(self, data: Any, split: str) -> int:
        from data_pipelines.folder import index_split
        from data_pipelines.pack import is_packed, read_packed

        root = prepared_root(data)
        return len(read_packed(root, split) if is_packed(root) else index_split(root, split))


@register_kind("synthetic")
class Synthetic(ImageFolder):
    """A synthetic ImageNet-layout folder of real JPEG files, built on first use (atomically;
    skipped when present). With ``task="detect"`` a COCO-format set instead, prepared as
    ``kind="coco"`` so workers need not know the task."""

    def prepare(self, data: Any, *, task: str) -> Any:
        root = Path(data.root).absolute() if data.root else synthetic_root(data, task=task)
        s = data.synth
        if task == "detect":
            atomic_build(root, lambda tmp: synth_coco(tmp, images=s.images, size=s.size))
            coco = data.model_copy(update={"root": root, "kind": "coco"})
            return KINDS["coco"].prepare(coco, task=task)
        atomic_build(
            root,
            lambda tmp: synth_imagenet(
                tmp,
                classes=s.classes,
                train_per_class=s.train_per_class,
                val_per_class=s.val_per_class,
                size=s.size,
            ),
        )
        return data.model_copy(update={"root": root})


@register_kind("digits")
class Digits(DataKind):
    """scikit-learn's bundled 8x8 handwritten digits (:mod:`data_pipelines.digits`)."""

    def loader(self, data, split, *, batch_size, shard_id, num_shards, seed, **options):
        from data_pipelines.digits import DigitsLoader

        shard = dict(shard_id=shard_id, num_shards=num_shards, seed=seed)
        return DigitsLoader(split, image_size=data.image_size, batch_size=batch_size, **shard)

    def num_classes(self, data: Any) -> int:
        from data_pipelines.digits import NUM_CLASSES

        return NUM_CLASSES

    def split_size(self, data: Any, split: str) -> int:
        from data_pipelines.digits_file import split_size

        return split_size(split)


@register_kind("coco")
class Coco(DataKind):
    """A COCO-format detection set (``annotations/instances_{train,val}.json`` and images)
    or its packed shards (:mod:`data_pipelines.coco_pack`; a folder or an ``s3://`` prefix,
    copied to the node first with ``data.cache``), checked on the driver (annotations
    against images; shards listed) so a broken set fails before any worker starts. Loader
    options: ``include_crowd`` (default False: crowd boxes dropped), ``skip_empty`` (default
    False: images without boxes kept, with empty targets; folders only) and ``with_ids`` (a
    third item, the COCO image ids)."""

    def prepare(self, data: Any, *, task: str) -> Any:
        from data_pipelines.coco import index_coco
        from data_pipelines.pack import is_packed, read_packed

        if is_uri(data.root):
            check_remote_root(data.root, kind="coco")
            return data.model_copy()
        root = existing_root(data)
        for split in ("train", "val"):
            if is_packed(root):
                read_packed(root, split, kind="coco")
            else:
                index_coco(root, split)
        return data.model_copy(update={"root": root})

    def _index(self, data: Any, split: str, *, cache: bool = False, **options: bool):
        """A split's :class:`~data_pipelines.coco.CocoIndex`, or its packed shards (with
        ``cache`` and ``data.cache``, staged into this node's cache: a loader's, never the
        driver's counts)."""
        from data_pipelines.coco import index_coco
        from data_pipelines.pack import is_packed, read_packed

        root = prepared_root(data)
        if not is_packed(root):
            return index_coco(root, split, **options)
        if options.get("skip_empty"):
            raise ValueError(
                f"{root}: skip_empty needs a COCO folder; packed shards hold every image"
            )
        index = read_packed(root, split, kind="coco")
        if cache and data.cache and isinstance(root, str):
            from data_pipelines.shard_cache import stage

            index = stage(index, root, split)
        return index

    def loader(
        self,
        data,
        split,
        *,
        batch_size,
        shard_id,
        num_shards,
        seed,
        include_crowd: bool = False,
        skip_empty: bool = False,
        with_ids: bool = False,
    ):
        from data_pipelines.check import explain_decode_error
        from data_pipelines.coco import OUTPUT_MAP, CocoIndex, DetectionBatch, coco_pipeline
        from data_pipelines.loader import DaliLoader
        from data_pipelines.pack import iter_packed_images

        shard = dict(batch_size=batch_size, shard_id=shard_id, num_shards=num_shards, seed=seed)
        index = self._index(
            data, split, cache=True, include_crowd=include_crowd, skip_empty=skip_empty
        )
        train = split == "train"
        if isinstance(index, CocoIndex):
            where, category_ids = index.annotations, index.category_ids
            sources = lambda: (index.image_root / f for f in index.files)  # noqa: E731
        else:
            where, category_ids = join_uri(str(prepared_root(data)), split), index.category_ids
            sources = lambda: iter_packed_images(index)  # noqa: E731
        steps, options = shard_plan(data, split, len(index), where=where, **shard)
        pipe = coco_pipeline(
            index, train=train, image_size=data.image_size, include_crowd=include_crowd, **options
        )
        return DaliLoader(
            pipe,
            output_map=OUTPUT_MAP,
            steps=steps,
            convert=DetectionBatch(list(category_ids), with_ids=with_ids),
            on_error=lambda exc: explain_decode_error(exc, sources()),
        )

    def num_classes(self, data: Any) -> int:
        return len(self._index(data, "train").category_ids)

    def split_size(self, data: Any, split: str) -> int:
        return len(self._index(data, split))
