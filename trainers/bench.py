"""Step-time benchmark of the feedback rules against backprop (``bioprop bench rules``).

For each model, one copy per rule (same initial weights) is trained on the same random
batches; the rules are interleaved step by step, in a shuffled order each step, so machine
noise and cache effects hit all of them alike,
and each rule's median forward+backward+optimizer-step(+``after_step``) time is divided
by ``bp``'s from the same run.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import rules as rule_lib

__all__ = ["bench_rules", "format_table", "main"]

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"pfa": {"expansion": 4}}


def _build(name: str, num_classes: int, image_size: int) -> nn.Module:
    try:
        from trainers.models import build_model

        return build_model(name, num_classes=num_classes, image_size=image_size)
    except ImportError:  # the model zoo is optional here
        import torchvision

        if name != "resnet18":
            raise
        return torchvision.models.resnet18(num_classes=num_classes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_rules(
    models: Sequence[str] = ("mlp", "resnet18"),
    rules: Sequence[str] | None = None,
    *,
    steps: int = 20,
    warmup: int = 3,
    batch_size: int = 32,
    image_size: int = 64,
    num_classes: int = 10,
    device: str | None = None,
    rule_params: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Median step time of every rule and its ratio to ``bp``, per model.

    ``rules`` defaults to every registered rule; ``bp`` is always included.
    Returns one dict per (model, rule): ``model, rule, median_ms, ratio`` (median over
    bp's median), ``min_ms, ratio_min`` (fastest step over bp's fastest: the estimate least
    disturbed by other jobs on a shared machine), ``steps, batch_size, image_size, device``.
    """
    names = list(rules) if rules is not None else list(rule_lib.RULES)
    if "bp" not in names:
        names.insert(0, "bp")
    params = {**DEFAULT_PARAMS, **(rule_params or {})}
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows: list[dict[str, Any]] = []
    for model_name in models:
        torch.manual_seed(0)
        base = _build(model_name, num_classes, image_size)
        nets, opts = {}, {}
        for name in names:
            net, _ = rule_lib.convert(copy.deepcopy(base), name, **params.get(name, {}))
            nets[name] = net.to(dev).train()
            opts[name] = torch.optim.SGD(
                nets[name].parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4
            )
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(dev)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(dev)
        times: dict[str, list[float]] = {name: [] for name in names}
        order_rng = random.Random(0)
        for step in range(warmup + steps):
            order = list(names)
            order_rng.shuffle(order)  # no rule always runs right after a costly one
            for name in order:
                net, opt = nets[name], opts[name]
                _sync(dev)
                t0 = time.perf_counter()
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                rule_lib.after_step(net)
                _sync(dev)
                if step >= warmup:
                    times[name].append(time.perf_counter() - t0)
        bp_median, bp_min = statistics.median(times["bp"]), min(times["bp"])
        for name in names:
            median, best = statistics.median(times[name]), min(times[name])
            rows.append({
                "model": model_name, "rule": name, "median_ms": 1e3 * median,
                "ratio": median / bp_median, "min_ms": 1e3 * best, "ratio_min": best / bp_min,
                "steps": steps, "batch_size": batch_size, "image_size": image_size,
                "device": str(dev),
            })  # fmt: skip
            log.info("%s %s %.2f ms (%.3fx bp)", model_name, name, 1e3 * median, median / bp_median)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per rule, one ratio column (and ms) per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    names = list(dict.fromkeys(r["rule"] for r in rows))
    cell = {(r["model"], r["rule"]): r for r in rows}
    head = (
        "| rule | "
        + " | ".join(f"{m} median (x bp) | {m} min (x bp) | {m} median ms" for m in models)
        + " |"
    )
    sep = "| --- |" + " ---: | ---: | ---: |" * len(models)
    lines = [head, sep]
    for name in names:
        parts = []
        for m in models:
            r = cell.get((m, name))
            parts += (
                [f"{r['ratio']:.2f}", f"{r['ratio_min']:.2f}", f"{r['median_ms']:.1f}"]
                if r
                else ["", "", ""]
            )
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m trainers.bench [--models mlp resnet18] [--rules ...] [--steps N] ...``"""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mlp", "resnet18"])
    ap.add_argument("--rules", nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = bench_rules(
        args.models,
        rules=args.rules,
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
    )
    print(format_table(rows))  # noqa: T201 - CLI output


if __name__ == "__main__":
    main()
