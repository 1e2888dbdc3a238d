"""Synthetic ImageNet-layout JPEG folders: real files whose classes a small net learns.

Class ``c`` of ``K`` is a global pattern that survives random-resized-crop and a
horizontal flip: a class hue (``K`` hues spread over the colour wheel, interleaved so
neighbouring indices differ most), stripes whose orientation is horizontal or vertical
(both unchanged by a horizontal flip) and whose period depends on the class, plus a
random phase, brightness jitter and pixel noise per image. Files are written by PIL as
baseline JPEG (quality 90) in ``out/{train,val}/<class>/<class>_<i>.JPEG``.
"""

from __future__ import annotations

import colorsys
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["atomic_build", "class_name", "synth_coco", "synth_imagenet"]

log = logging.getLogger(__name__)

SYNTH_VERSION = 1  # bump when the generator changes, so cached sets are rebuilt


def class_name(index: int) -> str:
    """Folder name of synthetic class ``index`` (zero padded, so sorted order = index order)."""
    return f"c{index:04d}"


def _class_pattern(c: int, classes: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Colour, dark colour, orientation (0 horizontal / 1 vertical) and stripe period."""
    hue = ((c * 0.618033988749895) % 1.0) if classes > 8 else c / classes
    sat = 0.85 if (c // 2) % 2 == 0 else 0.55
    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, 0.95)) * 255.0
    dark = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.6, 0.35)) * 255.0
    return rgb, dark, c % 2, 4 + (c // 2) % 4


def synth_image(c: int, classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` RGB uint8 image of class ``c``."""
    rgb, dark, orient, period = _class_pattern(c, classes)
    scale = size / 32.0
    coords = np.arange(size, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * coords / (period * scale) + phase) > 0
    stripes = (
        np.tile(wave[:, None], (1, size)) if orient == 0 else np.tile(wave[None, :], (size, 1))
    )
    img = np.where(stripes[..., None], rgb, dark).astype(np.float32)
    img *= rng.uniform(0.8, 1.2)
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synth_imagenet(
    out: str | Path,
    *,
    classes: int,
    train_per_class: int,
    val_per_class: int,
    size: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a synthetic ImageNet-layout JPEG folder at ``out``; returns ``out``.

    ``progress`` (if given) is called with the number of images written since the last call.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = out / split / class_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = synth_image(c, classes, size, rng)
                Image.fromarray(img).save(folder / f"{class_name(c)}_{i:05d}.JPEG", quality=90)
            if progress is not None:
                progress(per_class)
    log.info("wrote synthetic imagenet set at %s", out)
    return out


def atomic_build(final: Path, build: Callable[[Path], object]) -> Path:
    """Build a folder at ``final`` once: ``build(tmp)`` fills a temp dir that is renamed.

    Skipped when ``final`` already exists; if another process wins the race, its result
    is kept and ours is discarded.
    """
    final = Path(final).absolute()
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        log.info("%s was built concurrently; keeping that copy", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


COCO_CATEGORIES = (  # non-contiguous ids, as real COCO's, to exercise the remapping
    {"id": 1, "name": "red_box", "colour": (220, 40, 40)},
    {"id": 3, "name": "green_box", "colour": (40, 200, 60)},
    {"id": 7, "name": "blue_box", "colour": (50, 70, 230)},
)


def synth_coco(
    out: str | Path,
    *,
    images: int,
    size: int = 64,
    val_images: int | None = None,
    max_objects: int = 3,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a COCO-format detection set: ``out/{train,val}/*.jpg`` and
    ``out/annotations/instances_{train,val}.json`` with the true boxes (xywh, pixels).

    Each image (``size`` high, ``size`` to ``1.5 * size`` wide) holds 1..``max_objects``
    filled rectangles in the colour of their category on a noisy grey background.
    """
    import json

    out = Path(out)
    rng = np.random.default_rng(seed)
    val_images = max(1, images // 4) if val_images is None else val_images
    categories = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES]
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, count in (("train", images), ("val", val_images)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        entries, anns = [], []
        for i in range(count):
            h, w = size, int(rng.integers(size, size * 3 // 2 + 1))
            img = rng.normal(110, 15, size=(h, w, 3))
            for _ in range(int(rng.integers(1, max_objects + 1))):
                cat = COCO_CATEGORIES[int(rng.integers(len(COCO_CATEGORIES)))]
                bw, bh = (int(rng.integers(max(4, size // 6), size // 2 + 1)) for _ in range(2))
                x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
                img[y : y + bh, x : x + bw] = cat["colour"]
                anns.append(
                    {
                        "id": ann_id,
                        "image_id": i + 1,
                        "category_id": cat["id"],
                        "bbox": [x, y, bw, bh],
                        "area": bw * bh,
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
            name = f"{split}_{i:06d}.jpg"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name, quality=92)
            entries.append({"id": i + 1, "file_name": name, "width": w, "height": h})
            if progress is not None:
                progress(1)
        doc = {"images": entries, "annotations": anns, "categories": categories}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    log.info("wrote synthetic coco set at %s", out)
    return out
