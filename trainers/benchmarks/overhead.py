"""``bioprop bench overhead``: what bioprop adds to a small setting, side by side.

Alternating rounds, each in a fresh working directory (a new MLflow store), each timed from
process start to exit:

- ``plain``: :data:`PLAIN_SCRIPT`, the plain PyTorch equivalent of the 1-epoch digits
  setting (scikit-learn's digits, the same split and normalisation, the ``mlp`` model's
  shape, SGD with bioprop's defaults, batch 64, an evaluation pass): no Ray, no MLflow;
- ``run``: ``bioprop run`` of that setting (1 worker) on a fresh local Ray cluster;
- ``sweep-fresh`` / ``sweep-running``: ``bioprop run`` of a digits sweep of ``rules`` x
  ``lrs`` settings (1 worker, ``epochs`` epochs) on a fresh local cluster, and on a cluster
  already running (one this process starts once, joined through ``RAY_ADDRESS``).

A sweep's per-setting overhead is ``(wall - training) / settings``, training being the sum
of the children's ``epoch_time_s`` (what their epochs took, as logged to MLflow). Reports
the median of each measure over the rounds and the ratios ``run / plain`` and, per
setting, ``sweep overhead / plain``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PLAIN_SCRIPT", "bench_overhead", "sweep_spec"]

RULES = ("bp", "fa", "dfa", "ss")

PLAIN_SCRIPT = """
import numpy as np, torch, torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
torch.manual_seed(0)
bunch = load_digits()
x = (bunch.images / 16.0).astype(np.float32)
y = bunch.target.astype(np.int64)
order = np.random.default_rng(0).permutation(len(y))
x, y = x[order], y[order]
x = torch.from_numpy((x - x.mean()) / x.std()).unsqueeze(1).expand(-1, 3, -1, -1)
y = torch.from_numpy(y)
cut = int(len(y) * 0.8)
model = nn.Sequential(nn.Flatten(), nn.Linear(192, 256), nn.ReLU(), nn.Linear(256, 256),
                      nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
for epoch in range({epochs}):
    model.train()
    perm = torch.randperm(cut)
    for i in range(cut // 64):
        idx = perm[i * 64:(i + 1) * 64]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[cut:]).argmax(1) == y[cut:]).float().mean().item()
    print("epoch", epoch + 1, "val_acc", round(acc, 3))
"""


def one_spec(epochs: int = 1) -> dict[str, Any]:
    """The 1-worker digits setting :data:`PLAIN_SCRIPT` is the plain equivalent of."""
    return {
        "name": "overhead-run",
        "model": "mlp",
        "data": {"kind": "digits", "image_size": 8},
        "rule": {"name": "bp"},
        "optim": {"lr": 0.05},
        "schedule": {"epochs": epochs},
        "batch_size": 64,
        "scale": {"workers": 1},
    }


def sweep_spec(rules: int, lrs: int, epochs: int = 2) -> dict[str, Any]:
    """A digits sweep of ``rules`` rules (from :data:`RULES`) x ``lrs`` learning rates."""
    if not 1 <= rules <= len(RULES):
        raise ValueError(f"rules must be 1..{len(RULES)}, got {rules}")
    grid = [round(0.01 * (i + 1), 4) for i in range(lrs)]
    return {
        **one_spec(epochs),
        "name": "overhead-sweep",
        "rule": {"name": list(RULES[:rules])},
        "optim": {"lr": grid},
    }


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall


def _training_s(folder: Path) -> tuple[float, int]:
    """Sum of the children's ``epoch_time_s`` in ``folder``'s MLflow store, and their count."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'bioprop-runs' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(experiments, filter_string="tags.`bioprop.role` = 'child'")
    total = 0.0
    for run in children:
        total += sum(m.value for m in client.get_metric_history(run.info.run_id, "epoch_time_s"))
    return total, len(children)


def _bioprop_run(spec: dict[str, Any], root: Path, env: dict[str, str]) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(dir=root))
    (folder / "spec.json").write_text(json.dumps(spec))
    wall = _timed([sys.executable, "-m", "service.cli", "run", "spec.json"], folder, env)
    training, _ = _training_s(folder)
    return wall, training


def bench_overhead(
    *,
    rounds: int = 3,
    rules: int = 4,
    lrs: int = 10,
    epochs: int = 2,
    modes: tuple[str, ...] = ("plain", "run", "sweep-fresh", "sweep-running"),
    cpus: int | None = None,
    checkouts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Alternating rounds of ``modes``; returns every round and the medians and ratios.

    ``checkouts``: ``{label: folder}`` of bioprop checkouts whose ``run`` to time side by
    side (e.g. the code before a change; each mode ``run`` and ``sweep-*`` once per
    checkout, labelled ``<mode>@<label>``); default this one, unlabelled."""
    root = Path(tempfile.mkdtemp(prefix="bioprop-overhead-"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    code = {f"@{k}": v for k, v in checkouts.items()} if checkouts else {"": repo}
    settings = rules * lrs
    runs = [(m, c) for m in modes for c in (code if m != "plain" else {"": repo})]
    found: dict[str, list[float]] = {m + c: [] for m, c in runs}
    overhead: dict[str, list[float]] = {m + c: [] for m, c in runs if m.startswith("sweep")}
    load: list[float] = []  # 1-minute load average after each round: a shared machine's
    address = None
    if "sweep-running" in modes:
        import ray

        from trainers.ray_setup import init_local_ray

        os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the cluster's workers import bioprop
        address = init_local_ray(num_cpus=cpus, log_to_driver=False).address_info["gcs_address"]
    try:
        for _ in range(rounds):
            for mode, label in runs:
                run_env = dict(env, PYTHONPATH=code.get(label, repo))
                if mode == "plain":
                    script = PLAIN_SCRIPT.replace("{epochs}", "1")
                    wall = _timed([sys.executable, "-c", script], root, env)
                elif mode == "run":
                    wall, _ = _bioprop_run(one_spec(1), root, run_env)
                else:
                    if mode == "sweep-running":  # what joining it takes (e.g. its token)
                        run_env = {
                            **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
                            "PYTHONPATH": code.get(label, repo),
                            "RAY_ADDRESS": address,
                        }
                    wall, training = _bioprop_run(sweep_spec(rules, lrs, epochs), root, run_env)
                    overhead[mode + label].append((wall - training) / settings)
                found[mode + label].append(wall)
            load.append(os.getloadavg()[0])
    finally:
        if address is not None:
            ray.shutdown()
    result: dict[str, Any] = {
        "rounds": found,
        "per_setting_overhead_s": overhead,
        "load_after_round": load,
    }
    median = {m: statistics.median(v) for m, v in found.items()}
    result["median_wall_s"] = median
    result["settings"] = settings
    for name in median:
        if name.startswith("run") and "plain" in median:
            result[f"{name}_over_plain"] = median[name] / median["plain"]
    for mode, values in overhead.items():
        result[f"{mode}_overhead_per_setting_s"] = statistics.median(values)
    return result
