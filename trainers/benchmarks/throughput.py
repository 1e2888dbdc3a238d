"""Training-throughput benchmarks on the real path (Ray Train DDP + DALI + MLflow).

- :func:`bench_workers`: samples/s of one model with 1 and with N workers, the two configs
  alternated in one process so load from elsewhere hits both alike; the speed-up is the ratio
  of their median epoch throughputs (first epoch of each run dropped as warm-up).
- :func:`bench_ceiling`: what the machine allows at best: the same forward/backward/step loop
  (1 torch thread, random data) in N independent processes at once, no DDP, no data loading,
  against one process alone. On a machine whose cores share caches, memory bandwidth or a
  physical core (SMT, VM vCPUs), N copies run slower each than one alone, and no amount of
  DDP tuning beats that ratio.
- :func:`bench_sweep_epochs`: time per epoch of every rule of a sweep (default: the digits MLP).

Numbers are read back from the runs' MLflow metrics (``samples_per_s``, ``epoch_time_s``),
the same ones a user sees.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any

from mlflow import MlflowClient

from trainers.launch import run_experiment
from trainers.spec import ExperimentSpec

__all__ = ["bench_ceiling", "bench_sweep_epochs", "bench_workers"]


def _history(uri: str, run_id: str, name: str) -> list[float]:
    points = MlflowClient(uri).get_metric_history(run_id, name)
    return [m.value for m in sorted(points, key=lambda m: m.step)]


def bench_workers(
    *,
    model: str = "resnet18",
    image_size: int = 32,
    workers: int = 2,
    epochs: int = 3,
    rounds: int = 2,
    batch_size: int = 32,
    train_per_class: int = 64,
) -> dict[str, Any]:
    """Median samples/s with 1 worker and with ``workers`` workers; ``speedup`` = their ratio."""
    base = {
        "name": f"bench-{model}",
        "model": model,
        "rule": {"name": "bp"},
        "data": {
            "kind": "synthetic",
            "image_size": image_size,
            "synth": {"classes": 4, "train_per_class": train_per_class, "val_per_class": 8},
        },
        "schedule": {"epochs": epochs},
        "batch_size": batch_size,
        "checkpoint": {"every_epochs": epochs},
        "tracking": {"experiment": "bioprop-bench"},
    }
    samples: dict[int, list[float]] = {1: [], workers: []}
    for _ in range(rounds):
        for n in (1, workers):
            spec = ExperimentSpec.model_validate({**base, "scale": {"workers": n}})
            result = run_experiment(spec)
            (child,) = result["children"]
            samples[n] += _history(result["tracking_uri"], child["run_id"], "samples_per_s")[1:]
    one, many = statistics.median(samples[1]), statistics.median(samples[workers])
    return {
        "model": model,
        "image_size": image_size,
        "batch_size": batch_size,
        "samples_per_s_1": one,
        f"samples_per_s_{workers}": many,
        "speedup": many / one,
        "epochs_measured": {n: len(v) for n, v in samples.items()},
    }


def _copy_rate(barrier, results, model: str, image_size: int, batch_size: int, steps: int) -> None:
    """One independent copy: median samples/s of ``steps`` SGD steps after a shared barrier."""
    import torch
    import torch.nn.functional as F

    from trainers.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_model(model, num_classes=10, image_size=image_size)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.randint(0, 10, (batch_size,))

    def step() -> float:
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0

    step()  # warm-up
    barrier.wait()
    times = [step() for _ in range(steps)]
    results.put(batch_size / statistics.median(times))


def _copies_rate(copies: int, **kwargs: Any) -> float:
    """Summed samples/s of ``copies`` processes running :func:`_copy_rate` at the same time."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(copies), ctx.Queue()
    procs = [
        ctx.Process(target=_copy_rate, args=(barrier, results), kwargs=kwargs)
        for _ in range(copies)
    ]
    for proc in procs:
        proc.start()
    try:
        rates = [results.get(timeout=600) for _ in range(copies)]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    return sum(rates)


def bench_ceiling(
    *,
    model: str = "resnet18",
    image_size: int = 64,
    workers: int = 2,
    batch_size: int = 64,
    steps: int = 8,
    rounds: int = 2,
) -> dict[str, Any]:
    """Best-case speed-up of ``workers`` processes over one on this machine.

    One process steps on the global ``batch_size``; ``workers`` independent processes each
    on ``batch_size // workers`` (as DDP shards it). ``ceiling`` = summed samples/s of the
    copies / samples/s of the single one, medians over ``rounds`` alternated rounds.
    """
    shared = dict(model=model, image_size=image_size, steps=steps)
    one: list[float] = []
    many: list[float] = []
    for _ in range(rounds):
        one.append(_copies_rate(1, batch_size=batch_size, **shared))
        many.append(_copies_rate(workers, batch_size=max(1, batch_size // workers), **shared))
    return {
        "independent_samples_per_s_1": statistics.median(one),
        f"independent_samples_per_s_{workers}": statistics.median(many),
        "ceiling": statistics.median(many) / statistics.median(one),
    }


def bench_sweep_epochs(spec: ExperimentSpec | None = None) -> list[dict[str, Any]]:
    """Median seconds per epoch of each rule in ``spec`` (default: digits MLP, every rule)."""
    from trainers.names import RULE_NAMES

    spec = spec or ExperimentSpec.model_validate(
        {
            "name": "bench-digits-mlp",
            "model": "mlp",
            "data": {"kind": "digits", "image_size": 8},
            "rule": {"name": list(RULE_NAMES)},
            "schedule": {"epochs": 3},
            "batch_size": 64,
            "checkpoint": {"every_epochs": 3},
            "tracking": {"experiment": "bioprop-bench"},
        }
    )
    result = run_experiment(spec)
    rows = []
    for child in result["children"]:
        times = _history(result["tracking_uri"], child["run_id"], "epoch_time_s")
        accs = _history(result["tracking_uri"], child["run_id"], "val_acc")
        rows.append(
            {
                "rule": child["rule"],
                "status": child["status"],
                "epoch_time_s": statistics.median(times) if times else float("nan"),
                "val_acc": accs[-1] if accs else float("nan"),
            }
        )
    return rows
