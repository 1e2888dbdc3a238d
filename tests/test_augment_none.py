"""``data.augment: none`` trains on the images as they are: a conv net run through
``bioprop run`` (Ray Train, DALI over JPEG files, MLflow) on a folder of handwritten
digits reaches the accuracy of the same model trained directly, in this process, on the
same decoded tensors (within 2 points)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

SIZE = 16
SPEC = {
    "name": "augment-none",
    "model": "convnet",
    "data": {"kind": "imagefolder", "image_size": SIZE, "augment": "none"},
    "rule": {"name": "bp"},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    "schedule": {"epochs": 3},
    "batch_size": 32,
    "scale": {"workers": 1},
    "max_failures": 0,
    "seed": 0,
}


def _digits_folder(root: Path) -> Path:
    """scikit-learn's 1797 digits as 16 px grey JPEGs, a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    for rank, i in enumerate(order):
        split = "train" if rank < int(0.8 * len(order)) else "val"
        folder = root / split / f"d{bunch.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray((bunch.images[i] * (255 / 16)).astype(np.uint8), mode="L")
        img.resize((SIZE, SIZE), Image.BILINEAR).save(folder / f"{i:04d}.jpg", quality=95)
    return root


def _direct(spec, train, val) -> float:
    """The run's model, optimizer and schedule, trained on tensors in this process."""
    from trainers import rules
    from trainers.optim import build_optimizer
    from trainers.tasks.classify import build_classifier

    (x, y), (xv, yv) = train, val
    model = build_classifier(spec, num_classes=10, in_channels=3)
    opt = build_optimizer(model.parameters(), spec.optim)
    gen = torch.Generator().manual_seed(1)
    for _ in range(spec.schedule.epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for k in range(len(y) // spec.batch_size):
            idx = order[k * spec.batch_size : (k + 1) * spec.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rules.after_step(model)
    model.eval()
    with torch.no_grad():
        return float((model(xv).argmax(1) == yv).float().mean())


def _decoded(data, split: str):
    import data_pipelines as dp

    loader = dp.build_loader(data, split, batch_size=64)
    batches = [(x.clone(), y.clone()) for _ in range(1) for x, y in loader]
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_augment_none_run_matches_direct_training(workdir: Path, ray_cluster: str) -> None:
    from mlflow import MlflowClient

    import data_pipelines as dp
    from service.cli import app
    from trainers.spec import ExperimentSpec

    root = _digits_folder(workdir / "digits")
    spec_path = workdir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    out = CliRunner().invoke(
        app, ["run", str(spec_path), "--set", f"data.root={root}", "--set", f"tracking.uri={uri}"]
    )
    assert out.exit_code == 0, out.output
    parent = re.search(r"MLflow parent run (\w+)", out.output).group(1)
    client = MlflowClient(uri)
    [child] = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
    )
    run_acc = child.data.metrics["val_acc"]

    spec = ExperimentSpec.model_validate({**SPEC, "data": {**SPEC["data"], "root": str(root)}})
    data = dp.prepare(spec.data)
    train, val = _decoded(data, "train"), _decoded(data, "val")
    assert len(val[1]) == 360 and len(train[1]) == (1437 // 64) * 64
    direct_acc = _direct(spec, train, val)
    assert run_acc > 0.85 and abs(run_acc - direct_acc) <= 0.02, (run_acc, direct_acc)
