"""The data kinds' catalogue: one torch-free descriptor per ``data.kind``.

Per kind: whether ``data.root`` is required, the train-time augmentations it takes and its
default, the tasks it serves, and whether its root may be an object-store prefix. ``data_pipelines.spec.DataSpec`` validates against it and
``data_pipelines.kinds.register_kind`` refuses a kind not listed here; adding a kind is its
``DataKind`` class plus its descriptor. ``tests/data_pipelines/test_kind_catalogue.py`` ties the
two together.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AUGMENTATIONS", "DATA_KINDS", "KIND_INFO", "KindInfo", "add_kind"]

#: every augmentation a pipeline implements (``data.augment``)
AUGMENTATIONS = ("imagenet", "cifar", "none")


@dataclass(frozen=True)
class KindInfo:
    """What the spec needs to know of one data kind."""

    needs_root: bool
    augmentations: tuple[str, ...]
    default_augment: str
    tasks: tuple[str, ...]
    object_store: bool = False  # data.root may be an s3:// prefix


KIND_INFO: dict[str, KindInfo] = {
    "imagefolder": KindInfo(True, AUGMENTATIONS, "imagenet", ("classify",), object_store=True),
    "coco": KindInfo(True, ("none",), "none", ("detect",), object_store=True),
    "digits": KindInfo(False, ("none",), "none", ("classify",)),
    "synthetic": KindInfo(False, AUGMENTATIONS, "imagenet", ("classify", "detect")),
}

#: the built-in kinds' names, in catalogue order (a plugin's kinds are added to
#: :data:`KIND_INFO` only, which is what the spec and ``register_kind`` read)
DATA_KINDS = tuple(KIND_INFO)


def add_kind(name: str, info: KindInfo) -> None:
    """List a plugin's data kind (``trainers.plugins``); its implementation is a
    ``DataKind`` registered with ``register_kind``. Refuses a name already listed."""
    if name in KIND_INFO:
        raise ValueError(f"data kind {name!r} is already in the catalogue")
    KIND_INFO[name] = info
