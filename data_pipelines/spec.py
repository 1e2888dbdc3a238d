"""The ``data:`` section of the experiment spec (``DataSpec``, with ``SynthSpec``): the
data layer's own configuration, validated against the data kinds' catalogue
(:mod:`data_pipelines.catalogue`). ``trainers.spec.ExperimentSpec`` embeds it; torch-free.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from data_pipelines.catalogue import AUGMENTATIONS, KIND_INFO
from data_pipelines.location import is_uri
from data_pipelines.spec_types import DataRoot, Int, Section, check_known

__all__ = ["DataSpec", "SynthSpec"]


class SynthSpec(Section):
    """Size of the synthetic set built on first use when ``data.kind`` is ``synthetic``."""

    classes: Int = Field(4, ge=2, le=1000)
    train_per_class: Int = Field(48, ge=1, le=1_000_000)
    val_per_class: Int = Field(16, ge=1, le=1_000_000)
    size: Int = Field(40, ge=8, le=1024, description="side of the written JPEG files, pixels")
    images: Int = Field(
        32, ge=1, le=1_000_000, description="number of images for a synthetic COCO set"
    )


class DataSpec(Section):
    kind: str = Field("synthetic", description="where the data comes from: " + ", ".join(KIND_INFO))
    root: DataRoot | None = Field(
        None,
        description="dataset root holding train/ and val/ (or packed shards with wds.json): "
        "a folder, or an object-store prefix s3://bucket/prefix whose endpoint and "
        "credentials come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); "
        "for synthetic, where to build it (default: a cache folder under the working "
        "directory)",
    )
    image_size: Int = Field(32, ge=8, le=1024, description="side of the crop fed to the model")
    val_resize: Int | None = Field(
        None,
        ge=8,
        le=4096,
        description="shorter side before the val center crop (default image_size*256/224 "
        "with imagenet augmentation, image_size with cifar and none)",
    )
    num_threads: Int = Field(1, ge=1, le=64, description="DALI CPU threads per worker")
    cache: bool = Field(
        False,
        description="packed shards on object storage (root s3://... with wds.json): copy "
        "each split's shards once per node, whole, into $BIOPROP_SHARD_CACHE (a node-local "
        "disk; default ~/.cache/bioprop/shards) and read them there at local-disk speed (DALI's reader "
        "otherwise fetches every sample with its own ranged request); the same samples in "
        "the same order. Ignored for other roots",
    )
    augment: Literal[AUGMENTATIONS] | None = Field(
        None,
        description="train-time augmentation: imagenet (random-resized crop over 8-100 % of "
        "the area, aspect 3/4-4/3, plus a horizontal flip), cifar (pad 4 pixels, random "
        "image_size crop, horizontal flip), none (the val transform). Default by kind: "
        "imagefolder and synthetic imagenet, digits none (the only one it takes); coco keeps "
        "its own detection flip and takes none. The val transform is a resize of the shorter "
        "side to val_resize and a center crop; val_resize defaults to image_size*256/224 "
        "with imagenet and to image_size with cifar and none",
    )
    synth: SynthSpec = Field(default_factory=SynthSpec)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        return check_known("data.kind", value, KIND_INFO, "kinds")

    @model_validator(mode="after")
    def _fits_kind(self) -> DataSpec:
        """``root`` where the kind needs one (an ``s3://`` one where it reads object
        storage), an augmentation the kind takes (:data:`data_pipelines.catalogue.KIND_INFO`)."""
        info = KIND_INFO[self.kind]
        if info.needs_root and self.root is None:
            raise ValueError(f"data.root is required when data.kind is {self.kind!r}")
        if is_uri(self.root) and not info.object_store:
            remote = ", ".join(k for k, i in KIND_INFO.items() if i.object_store)
            raise ValueError(
                f"data.root {self.root!r}: data.kind {self.kind!r} reads a local folder; "
                f"object-store roots are read by {remote}"
            )
        if self.augment is not None and self.augment not in info.augmentations:
            raise ValueError(
                f"data.augment {self.augment!r} is not available for data.kind {self.kind!r} "
                f"(it takes {', '.join(info.augmentations)})"
            )
        return self

    @property
    def augmentation(self) -> str:
        """``augment``, or the kind's default when unset."""
        return self.augment if self.augment is not None else KIND_INFO[self.kind].default_augment
