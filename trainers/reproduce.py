"""CPU-scale reproduction: every rule on scikit-learn's digits, and Liao et al.'s
sign-concordance sweep (``sc``, p = 1, 0.75, 0.5) with/without BatchNorm and Batch Manhattan.

``python -m trainers.reproduce [--seeds 3] [--epochs 30] [--out results.json]`` prints the
markdown tables recorded in ``docs/results.md``.

Rule params: ``RULE_PARAMS`` (kp/pfa decay 3e-3, pfa expansion 4), the rest defaults.
Model: 64-128-128-10 ReLU MLP (optionally Linear-BN-ReLU; the sweep also with 6 hidden
layers), SGD momentum 0.9, lr 0.05 (Batch Manhattan: 3e-5, the best of 3e-4/1e-4/3e-5
for BP), weight decay 1e-4, batch 64;
data: the 1797 digits (8x8), standardised, a fixed stratified 80/20 split.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import metrics, rules
from trainers.optim import build_optimizer
from trainers.spec import OptimSpec

__all__ = ["digits", "main", "mlp", "train_digits"]

log = logging.getLogger(__name__)

RULE_PARAMS: dict[str, dict[str, Any]] = {
    "kp": {"decay": 3e-3},
    "pfa": {"expansion": 4, "decay": 3e-3},
    "pfa_o": {"decay": 3e-3},
}


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised digits: ``(x_train, y_train, x_test, y_test)``, fixed split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    xtr, xte, ytr, yte = train_test_split(
        data.data, data.target, test_size=0.2, random_state=0, stratify=data.target
    )
    xtr, xte = torch.tensor(xtr, dtype=torch.float32), torch.tensor(xte, dtype=torch.float32)
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-3)
    return (xtr - mean) / std, torch.tensor(ytr), (xte - mean) / std, torch.tensor(yte)


def mlp(bn: bool = False, hidden: int = 128, depth: int = 2) -> nn.Module:
    """``64 -> hidden (x depth) -> 10`` ReLU MLP, optionally Linear-BN-ReLU blocks."""

    def block(cin: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Linear(cin, hidden)]
        return layers + ([nn.BatchNorm1d(hidden)] if bn else []) + [nn.ReLU()]

    blocks = [m for i in range(depth) for m in block(64 if i == 0 else hidden)]
    return nn.Sequential(*blocks, nn.Linear(hidden, 10))


def train_digits(
    rule: str,
    seed: int,
    *,
    bn: bool = False,
    manhattan: bool = False,
    epochs: int = 30,
    depth: int = 2,
    lr: float | None = None,
    data: tuple | None = None,
    **params: Any,
) -> dict[str, float]:
    """Train one MLP on digits; returns test accuracy and the final mean weight angle."""
    xtr, ytr, xte, yte = data if data is not None else digits()
    torch.manual_seed(seed)
    model, _ = rules.convert(
        mlp(bn, depth=depth), rule, seed=seed, **{**RULE_PARAMS.get(rule, {}), **params}
    )
    if lr is None:
        lr = 3e-5 if manhattan else 0.05
    opt = build_optimizer(
        model.parameters(), OptimSpec(lr=lr, momentum=0.9, weight_decay=1e-4, manhattan=manhattan)
    )
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 64):
            idx = order[i : i + 64]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rules.after_step(model)
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return {"acc": acc, "mean_angle": metrics.alignment(model)["mean_angle"]}


def _stats(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def run_all(seeds: int = 3, epochs: int = 30) -> dict[str, Any]:
    """Both experiments; returns the raw numbers."""
    data = digits()
    out: dict[str, Any] = {"rules": {}, "sweep": {}}
    for rule in rules.RULES:
        runs = [train_digits(rule, s, epochs=epochs, data=data) for s in range(seeds)]
        out["rules"][rule] = runs
        log.info("%s %s", rule, _stats([r["acc"] for r in runs]))
    for depth in (2, 6):
        for p in ("bp", 1.0, 0.75, 0.5):
            rule, params = ("bp", {}) if p == "bp" else ("sc", {"p": p})
            for bn in (False, True):
                for bm in (False, True):
                    runs = [
                        train_digits(
                            rule, s, bn=bn, manhattan=bm, epochs=epochs, depth=depth, data=data,
                            **params,
                        )
                        for s in range(seeds)
                    ]  # fmt: skip
                    key = f"depth={depth},p={p},bn={bn},bm={bm}"
                    out["sweep"][key] = runs
                    log.info("sc %s %s", key, _stats([r["acc"] for r in runs]))
    return out


def tables(results: dict[str, Any]) -> str:
    """The two markdown tables of docs/results.md."""
    lines = [
        "| rule | test accuracy % (mean ± std) | final mean angle (deg) |",
        "| --- | ---: | ---: |",
    ]
    for rule, runs in results["rules"].items():
        angle = statistics.mean(r["mean_angle"] for r in runs)
        lines.append(f"| {rule} | {_stats([r['acc'] for r in runs])} | {angle:.1f} |")
    lines += ["", "| hidden layers | p | plain SGD | BN | BM | BN + BM |"]
    lines += ["| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for depth in (2, 6):
        for p in ("bp", 1.0, 0.75, 0.5):
            cells = [
                _stats([r["acc"] for r in results["sweep"][f"depth={depth},p={p},bn={bn},bm={bm}"]])
                for bn, bm in ((False, False), (True, False), (False, True), (True, True))
            ]
            lines.append(f"| {depth} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="digits reproduction of every rule")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default=None, help="write the raw numbers as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    results = run_all(args.seeds, args.epochs)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    print(tables(results))  # noqa: T201 - CLI output


if __name__ == "__main__":
    main()
