"""Step-time benchmark of the feedback rules against backprop (``bioprop bench rules``).

By default it times what a user's ImageNet job does on one worker: ResNet-18 at 224 px on a
per-worker batch of 32 (the shipped ImageNet specs in ``specs/``: global batch 256 over 8
workers), on CUDA with bfloat16 autocast and channels-last when a GPU exists (as
``trainers.worker`` trains), else on the CPU in float32. ``wm``'s mirror phase does this
rank's share of the noise, ``1 / world`` of it (``world`` = 8 by default, the specs'
``scale.workers``); the all-reduce that adds the ranks' shares is not timed (one process).

For each (model, image size), one copy per rule (same initial weights) is trained on the same
random batch; the rules alternate step by step, in a shuffled order each round, so machine
noise and cache effects hit all of them alike. A rule's step time is the median of its
forward + backward + optimizer step plus the mean of its ``after_step`` (``wm``'s mirror
phase, which runs after one step in ``K``, ``kp``'s and ``pfa``'s decay), divided by
``bp``'s from the same rounds; the ``after_step`` part is also reported as the update share
of the step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import math
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import rules as rule_lib

__all__ = ["DEFAULTS", "bench_mirror_tradeoff", "bench_rules", "format_table", "main"]

log = logging.getLogger(__name__)

# the configuration users train: specs/akrout2019-resnet18.yaml, jian-benna-pfa-resnet18.yaml
# and xiao2018-resnet18-*.yaml (image_size 224, batch_size 256, scale.workers 8)
DEFAULTS: dict[str, Any] = {
    "models": ("resnet18",),
    "image_sizes": (224,),
    "batch_size": 256 // 8,
    "world": 8,
}


def _build(name: str, num_classes: int, image_size: int) -> nn.Module:
    from trainers.models import build_model

    return build_model(name, num_classes=num_classes, image_size=image_size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rules_of(names: Sequence[str] | None) -> list[str]:
    out = list(names) if names is not None else list(rule_lib.RULES)
    return out if "bp" in out else ["bp", *out]


def bench_rules(
    models: Sequence[str] = DEFAULTS["models"],
    rules: Sequence[str] | None = None,
    *,
    image_sizes: Sequence[int] = DEFAULTS["image_sizes"],
    batch_size: int = DEFAULTS["batch_size"],
    world: int = DEFAULTS["world"],
    steps: int = 20,
    warmup: int = 3,
    num_classes: int = 1000,
    device: str | None = None,
    amp: bool | None = None,
    rule_params: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Median step time of every rule and its ratio to ``bp``, per model and image size.

    ``rules`` defaults to every registered rule; ``bp`` is always included. ``amp``
    defaults to on for CUDA (bfloat16 autocast, channels-last), off elsewhere.
    A rule's step time is the median of its forward + backward + optimizer step over the
    timed rounds plus the mean of its ``after_step`` (``wm`` mirrors after one step in
    ``K``: keep ``steps`` a multiple of ``K``, 4 by default).
    Returns one dict per (model, image size, rule): ``model, image_size, rule, median_ms,
    ratio`` (that time over bp's), ``min_ms, ratio_min`` (the same with the fastest
    training step), ``update_ms`` (mean ``after_step`` time), ``update_share`` (its
    fraction of the step time), ``steps, batch_size, world, device, amp``.
    """
    names = _rules_of(rules)
    params = rule_params or {}
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_amp = dev.type == "cuda" if amp is None else amp
    rows: list[dict[str, Any]] = []
    for model_name in models:
        for size in image_sizes:
            rows += _bench_one(
                model_name, names, params, size, batch_size, world, steps, warmup,
                num_classes, dev, use_amp,
            )  # fmt: skip
    return rows


def _bench_one(
    model_name, names, params, size, batch_size, world, steps, warmup, num_classes, dev, use_amp
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    base = _build(model_name, num_classes, size)
    fmt = torch.channels_last if use_amp and dev.type == "cuda" else torch.contiguous_format
    nets, opts = {}, {}
    for name in names:
        net, _ = rule_lib.convert(copy.deepcopy(base), name, **params.get(name, {}))
        for _, layer in rule_lib.feedback_layers(net):
            if hasattr(layer, "mirror_shard"):  # time this rank's share of the mirror noise
                layer.mirror_shard = (0, world)
        nets[name] = net.to(dev, memory_format=fmt).train()
        opts[name] = torch.optim.SGD(
            nets[name].parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4
        )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=gen).to(dev, memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
    times: dict[str, list[float]] = {name: [] for name in names}
    updates: dict[str, list[float]] = {name: [] for name in names}
    order_rng = random.Random(0)
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
    )
    for step in range(warmup + steps):
        order = list(names)
        order_rng.shuffle(order)  # no rule always runs right after a costly one
        for name in order:
            net, opt = nets[name], opts[name]
            _sync(dev)
            t0 = time.perf_counter()
            with autocast:
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(dev)
            t1 = time.perf_counter()
            rule_lib.after_step(net)
            _sync(dev)
            if step >= warmup:
                times[name].append(t1 - t0)
                updates[name].append(time.perf_counter() - t1)
    # the training step's median (robust to other jobs' noise) plus the after_step part's
    # mean: wm mirrors on one step in K, and a median would leave its phases out
    update = {name: statistics.fmean(updates[name]) for name in names}
    median = {name: statistics.median(times[name]) + update[name] for name in names}
    best = {name: min(times[name]) + update[name] for name in names}
    rows = []
    for name in names:
        median_ms, update_ms = 1e3 * median[name], 1e3 * update[name]
        rows.append({
            "model": model_name, "image_size": size, "rule": name, "median_ms": median_ms,
            "ratio": median[name] / median["bp"], "min_ms": 1e3 * best[name],
            "ratio_min": best[name] / best["bp"], "update_ms": update_ms,
            "update_share": update[name] / median[name], "steps": steps,
            "batch_size": batch_size, "world": world, "device": str(dev), "amp": use_amp,
        })  # fmt: skip
        log.info(
            "%s %spx %s %.1f ms (%.3fx bp, update %.1f%%)",
            model_name, size, name, median_ms, median[name] / median["bp"],
            100 * update[name] / median[name],
        )  # fmt: skip
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per rule; per (model, image size) the median ratio to bp, the
    min ratio, the median ms and the ``after_step`` share."""
    configs = list(dict.fromkeys((r["model"], r["image_size"]) for r in rows))
    names = list(dict.fromkeys(r["rule"] for r in rows))
    cell = {(r["model"], r["image_size"], r["rule"]): r for r in rows}
    heads = []
    for m, s in configs:
        heads += [f"{m} {s}px median (x bp)", "min (x bp)", "median ms", "update share"]
    lines = ["| rule | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(heads)]
    for name in names:
        parts = []
        for m, s in configs:
            r = cell.get((m, s, name))
            parts += (
                [
                    f"{r['ratio']:.2f}",
                    f"{r['ratio_min']:.2f}",
                    f"{r['median_ms']:.1f}",
                    f"{100 * r['update_share']:.1f} %",
                ]
                if r
                else ["", "", "", ""]
            )
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def bench_mirror_tradeoff(
    fan_ins: Sequence[int] = (64, 576, 2304, 4608),
    everies: Sequence[int] = (1, 4, 16),
    *,
    n_out: int = 64,
    mirror_lr: float = 0.01,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``wm``'s steady-state angle against its mirror work, per fan-in and ``K``.

    One ``Linear(fan_in, n_out)`` with ``W`` fixed, the default mirror batch (the fan-in)
    and ``mirror_lr`` per optimizer step; mirror iterations run through the running-mean
    start and four time constants, then the angle between ``W`` and ``B`` is averaged over
    one more time constant. Returns ``fan_in, every, rate`` (per iteration), ``angle``,
    ``predicted`` (``atan(sqrt(rate / (2 - rate)))``), ``mirror_ms_per_step`` (median
    iteration time / ``K``, one process drawing all the noise), ``noise_per_step``.
    """
    from trainers.metrics import angle

    rows = []
    for fan_in in fan_ins:
        for every in everies:
            torch.manual_seed(seed)
            layer = rule_lib.RULES["wm"].from_layer(
                nn.Linear(fan_in, n_out, bias=False), seed=seed, name=f"fc{fan_in}",
                mirror_every=every, mirror_lr=mirror_lr,
            )  # fmt: skip
            rate = layer.schedule.lr
            settle = math.ceil(1 / rate) + math.ceil(4 / rate)
            angles, times = [], []
            for t in range(settle + math.ceil(1 / rate)):
                t0 = time.perf_counter()
                layer.mirror()
                times.append(time.perf_counter() - t0)
                if t >= settle:
                    angles.append(angle(layer.weight, layer.backward_weight()))
            rows.append({
                "fan_in": fan_in, "every": every, "rate": rate,
                "angle": statistics.fmean(angles),
                "predicted": math.degrees(math.atan(math.sqrt(rate / (2 - rate)))),
                "mirror_ms_per_step": 1e3 * statistics.median(times) / every,
                "noise_per_step": layer.schedule.batch / every,
            })  # fmt: skip
            log.info("%s", rows[-1])
    return rows


def plot_mirror_tradeoff(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """:func:`bench_mirror_tradeoff`'s rows as a figure: measured steady-state angle against
    mirror time per optimizer step (one process), one line per fan-in, each point marked
    with its ``K``; the predicted angle for each ``K`` as a dotted level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for fan_in in sorted({r["fan_in"] for r in rows}):
        mine = sorted((r for r in rows if r["fan_in"] == fan_in), key=lambda r: r["every"])
        xs = [r["mirror_ms_per_step"] for r in mine]
        ax.plot(xs, [r["angle"] for r in mine], marker="o", label=f"fan-in {fan_in}")
        for r in mine:
            ax.annotate(f"K={r['every']}", (r["mirror_ms_per_step"], r["angle"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    for predicted in sorted({round(r["predicted"], 2) for r in rows}):
        ax.axhline(predicted, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("mirror time per optimizer step, ms (one process, CPU)")
    ax.set_ylabel("steady-state angle W vs B, degrees")
    ax.set_title("wm: alignment against mirror work (dotted: predicted)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m trainers.benchmarks.rules [--models resnet18] [--image-sizes 224 64] [--rules ...]``"""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULTS["models"]))
    ap.add_argument("--rules", nargs="+", default=None)
    ap.add_argument("--image-sizes", nargs="+", type=int, default=list(DEFAULTS["image_sizes"]))
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    ap.add_argument("--world", type=int, default=DEFAULTS["world"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument(
        "--mirror-tradeoff",
        metavar="PNG",
        default=None,
        help="instead: wm's angle against mirror work at fan-in 64-4608, K 1/4/16, plotted here",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.mirror_tradeoff:
        rows = bench_mirror_tradeoff()
        plot_mirror_tradeoff(rows, args.mirror_tradeoff)
        for row in rows:
            print(row)  # noqa: T201 - CLI output
        return
    rows = bench_rules(
        args.models,
        rules=args.rules,
        image_sizes=args.image_sizes,
        batch_size=args.batch_size,
        world=args.world,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        amp=args.amp,
    )
    print(format_table(rows))  # noqa: T201 - CLI output


if __name__ == "__main__":
    main()
