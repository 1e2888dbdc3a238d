"""Small ImageNet and COCO sources in the layouts users download (imported by test
modules): the official ILSVRC2012 archives (a tar of per-class tars, a flat val tar, the
devkit with ``meta.mat`` and the ground-truth file), the Kaggle layout with
``LOC_val_solution.csv``, and the COCO 2017 zips. Images are the synthetic set's real JPEG
files (:func:`data_pipelines.synth.synth_image`), so a small net can learn them."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipelines.synth import synth_image

# wnids with ILSVRC2012 ids that are NOT in wnid order (as in the real devkit), so a val
# label mapped by position instead of through meta.mat lands in the wrong class
WNIDS = {"n01440764": 3, "n01443537": 1, "n01484850": 2}
NON_LEAF = ("n00001740", 1001)  # an inner synset of meta.mat (num_children > 0)


def jpeg(c: int, size: int, rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    Image.fromarray(synth_image(c, len(WNIDS), size, rng)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _meta_mat() -> bytes:
    from scipy.io import savemat

    entries = [(i, w, w, 0) for w, i in WNIDS.items()] + [(NON_LEAF[1], NON_LEAF[0], "entity", 3)]
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array(entries, dtype=dtype)
    out = io.BytesIO()
    savemat(out, {"synsets": synsets})
    return out.getvalue()


def official(src: Path, *, train: int = 12, val: int = 4, size: int = 32) -> dict[str, str]:
    """The official archives in ``src`` (``train`` images per class, ``val`` per class);
    returns val file name -> wnid."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    wnids = sorted(WNIDS)
    inner = {
        f"{w}.tar": _tar_bytes({f"{w}_{i}.JPEG": jpeg(c, size, rng) for i in range(train)})
        for c, w in enumerate(wnids)
    }
    (src / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(inner))
    truth, images, labels = [], {}, {}
    for n in range(1, val * len(wnids) + 1):
        c = (n * 7) % len(wnids)
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        images[name] = jpeg(c, size, rng)
        truth.append(str(WNIDS[wnids[c]]))
        labels[name] = wnids[c]
    (src / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(images))
    kit = "ILSVRC2012_devkit_t12"
    devkit = {
        f"{kit}/data/meta.mat": _meta_mat(),
        f"{kit}/data/ILSVRC2012_validation_ground_truth.txt": ("\n".join(truth) + "\n").encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in devkit.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (src / f"{kit}.tar.gz").write_bytes(out.getvalue())
    return labels


def kaggle(src: Path, *, train: int = 6, val: int = 3, size: int = 32) -> dict[str, str]:
    """The Kaggle layout in ``src``; returns val file name -> wnid."""
    rng = np.random.default_rng(1)
    root = src / "ILSVRC" / "Data" / "CLS-LOC"
    rows, labels = ["ImageId,PredictionString"], {}
    for c, w in enumerate(sorted(WNIDS)):
        (root / "train" / w).mkdir(parents=True)
        for i in range(train):
            (root / "train" / w / f"{w}_{i}.JPEG").write_bytes(jpeg(c, size, rng))
    (root / "val").mkdir(parents=True)
    for n in range(1, val * len(WNIDS) + 1):
        w = sorted(WNIDS)[n % len(WNIDS)]
        stem = f"ILSVRC2012_val_{n:08d}"
        (root / "val" / f"{stem}.JPEG").write_bytes(jpeg(sorted(WNIDS).index(w), size, rng))
        rows.append(f"{stem},{w} 1 2 20 30 {w} 3 4 10 10")
        labels[f"{stem}.JPEG"] = w
    (src / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return labels


def coco_zips(src: Path, *, images: int = 4, size: int = 48) -> None:
    """``train2017.zip``, ``val2017.zip`` and ``annotations_trainval2017.zip`` in ``src``."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    with zipfile.ZipFile(src / "annotations_trainval2017.zip", "w") as annotations:
        for split in ("train", "val"):
            doc = {"images": [], "annotations": [], "categories": [{"id": 18, "name": "dog"}]}
            with zipfile.ZipFile(src / f"{split}2017.zip", "w") as zf:
                for i in range(1, images + 1):
                    name = f"{i:012d}.jpg"
                    zf.writestr(f"{split}2017/{name}", jpeg(i % 3, size, rng))
                    doc["images"].append(
                        {"id": i, "file_name": name, "width": size, "height": size}
                    )
                    doc["annotations"].append(
                        {
                            "id": i,
                            "image_id": i,
                            "category_id": 18,
                            "bbox": [4, 4, 20, 20],
                            "area": 400,
                            "iscrowd": 0,
                        }
                    )
            annotations.writestr(f"annotations/instances_{split}2017.json", json.dumps(doc))
