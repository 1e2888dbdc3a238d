"""``bioprop bench rules|train|overhead``: the trainers' benchmarks, mounted by ``service/cli.py``.

:data:`BENCHMARKS` maps a command name to its typer function; the heavy modules (torch, Ray)
are imported inside each command so ``bioprop --help`` stays fast.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = [
    "BENCHMARKS",
    "bench_overhead_cmd",
    "bench_rules_cmd",
    "bench_train_cmd",
    "preflight_cmd",
]

console = Console()


def bench_rules_cmd(
    models: Annotated[str, typer.Option(help="comma-separated models")] = "resnet18",
    rules: Annotated[str | None, typer.Option(help="comma-separated rules (default: all)")] = None,
    image_sizes: Annotated[
        str, typer.Option(help="comma-separated image sides, pixels, timed side by side")
    ] = "224",
    batch_size: Annotated[int, typer.Option(help="per-worker batch")] = 32,
    world: Annotated[
        int, typer.Option(help="DDP workers whose share of wm's mirror noise one rank draws")
    ] = 8,
    steps: Annotated[int, typer.Option(help="timed rounds (one step of every rule each)")] = 20,
    warmup: Annotated[int, typer.Option(help="untimed rounds first")] = 3,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if any)")] = None,
    amp: Annotated[
        bool | None, typer.Option(help="bfloat16 autocast + channels-last (default: on CUDA)")
    ] = None,
) -> None:
    """Median step time of each rule and its ratio to BP, side by side (trainers.benchmarks.rules).

    Defaults: what one worker of the shipped ImageNet specs runs (ResNet-18, 224 px, batch
    256 over 8 workers)."""
    from trainers.benchmarks.rules import bench_rules, format_table

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sizes = [int(s) for s in image_sizes.split(",") if s]
    except ValueError:
        raise typer.BadParameter(
            f"not a comma-separated list of integers: {image_sizes!r}", param_hint="--image-sizes"
        ) from None
    rows = bench_rules(
        [m for m in models.split(",") if m],
        rules=[r for r in rules.split(",") if r] if rules else None,
        image_sizes=sizes,
        batch_size=batch_size,
        world=world,
        steps=steps,
        warmup=warmup,
        device=device,
        amp=amp,
    )
    console.print(format_table(rows), markup=False, highlight=False)


def bench_train_cmd(
    model: Annotated[str, typer.Option(help="model name")] = "resnet18",
    image_size: Annotated[int, typer.Option(help="input side, pixels")] = 64,
    workers: Annotated[int, typer.Option(help="compared against 1 worker")] = 2,
    batch_size: Annotated[int, typer.Option(help="global batch")] = 128,
    epochs: Annotated[int, typer.Option(help="epochs per run (the first is warm-up)")] = 3,
    rounds: Annotated[int, typer.Option(help="alternating rounds of both configs")] = 3,
    train_per_class: Annotated[
        int, typer.Option(help="synthetic train images per class (4 classes)")
    ] = 256,
    ceiling: Annotated[
        bool, typer.Option(help="also measure N independent processes (the machine's best case)")
    ] = True,
    sweep: Annotated[
        bool, typer.Option(help="also time an epoch of every rule (digits MLP)")
    ] = True,
) -> None:
    """Training samples/s with 1 vs N Ray Train workers; epoch time per rule of a sweep."""
    from trainers.benchmarks.throughput import bench_ceiling, bench_sweep_epochs, bench_workers

    logging.basicConfig(level=logging.WARNING)
    config = dict(model=model, image_size=image_size, workers=workers, batch_size=batch_size)
    result: dict[str, Any] = bench_workers(
        **config, epochs=epochs, rounds=rounds, train_per_class=train_per_class
    )
    if ceiling:
        result.update(bench_ceiling(**config, rounds=rounds))
        # how much of what the machine allows the DDP path gets
        result["ddp_efficiency"] = result["speedup"] / result["ceiling"]
    table = Table(title=f"{model} at {image_size}px, global batch {batch_size}")
    table.add_column("measure")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    if sweep:
        table = Table(title="digits MLP sweep, median epoch time")
        for column in ("rule", "status", "epoch time (s)", "val accuracy"):
            table.add_column(column)
        for row in bench_sweep_epochs():
            table.add_row(
                row["rule"], row["status"], f"{row['epoch_time_s']:.3f}", f"{row['val_acc']:.3f}"
            )
        console.print(table)


def bench_overhead_cmd(
    rounds: Annotated[int, typer.Option(help="alternating rounds of every mode")] = 3,
    rules: Annotated[int, typer.Option(help="rules of the sweep (bp, fa, dfa, ss: 1-4)")] = 4,
    lrs: Annotated[int, typer.Option(help="learning rates of the sweep")] = 10,
    epochs: Annotated[int, typer.Option(help="epochs per sweep setting")] = 2,
    mode: Annotated[
        list[str] | None,
        typer.Option(help="plain, run, sweep-fresh, sweep-running (repeatable; default all)"),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option(help="CPUs of the running cluster (default: all)")
    ] = None,
    checkout: Annotated[
        list[str] | None,
        typer.Option(
            help="LABEL=FOLDER: a bioprop checkout whose runs to time side by side, e.g. "
            "before=/src/bioprop-main (repeatable; default: this one). The running cluster of "
            "sweep-running imports this checkout: compare checkouts on the other modes"
        ),
    ] = None,
) -> None:
    """What bioprop adds to a small setting: a plain PyTorch script, `bioprop run` of it, and
    a digits sweep's per-setting overhead on a fresh and on a running cluster
    (trainers.benchmarks.overhead)."""
    from trainers.benchmarks.overhead import bench_overhead

    modes = tuple(mode or ("plain", "run", "sweep-fresh", "sweep-running"))
    unknown = set(modes) - {"plain", "run", "sweep-fresh", "sweep-running"}
    if unknown:
        raise typer.BadParameter(f"unknown mode(s) {sorted(unknown)}", param_hint="--mode")
    checkouts = dict(item.split("=", 1) for item in checkout or [] if "=" in item)
    if checkout and len(checkouts) != len(checkout):
        raise typer.BadParameter("give LABEL=FOLDER", param_hint="--checkout")
    result = bench_overhead(
        rounds=rounds,
        rules=rules,
        lrs=lrs,
        epochs=epochs,
        modes=modes,
        cpus=cpus,
        checkouts=checkouts or None,
    )
    sweeps = any(m.startswith("sweep") for m in modes)
    what = f"{result['settings']}-setting sweep, " if sweeps else ""
    table = Table(title=f"overhead: {what}{rounds} round(s)")
    table.add_column("measure")
    table.add_column("median")
    table.add_column("rounds")
    for name, values in result["rounds"].items():
        table.add_row(
            f"{name} wall (s)",
            f"{result['median_wall_s'][name]:.2f}",
            ", ".join(f"{v:.2f}" for v in values),
        )
    for name, values in result["per_setting_overhead_s"].items():
        table.add_row(
            f"{name} overhead per setting (s)",
            f"{result[f'{name}_overhead_per_setting_s']:.2f}",
            ", ".join(f"{v:.2f}" for v in values),
        )
    table.add_row(
        "load average (1 min) after each round",
        "",
        ", ".join(f"{v:.1f}" for v in result["load_after_round"]),
    )
    for key, value in result.items():
        if key.endswith("_over_plain"):
            table.add_row(key.removesuffix("_over_plain") + " / plain", f"{value:.2f}x", "")
    console.print(table)


BENCHMARKS = {"rules": bench_rules_cmd, "train": bench_train_cmd, "overhead": bench_overhead_cmd}


def preflight_cmd(
    storage: Annotated[
        str | None,
        typer.Option(help="storage location to check (default: BIOPROP_STORAGE_PATH)"),
    ] = None,
    ddp: Annotated[bool, typer.Option(help="check DDP between two nodes that train")] = True,
    expect: Annotated[
        str | None,
        typer.Option(help="comma-separated addresses of the nodes that must have joined"),
    ] = None,
) -> None:
    """Check every node of the Ray cluster (RAY_ADDRESS): bioprop imports, DALI loads, the
    storage is reachable, the Ray token and the DDP interface are set, and two nodes can
    set up DDP. One line per node that passed, one per problem naming the node; exit 1 on
    a problem."""
    import os

    import ray

    from trainers.preflight import check_cluster

    storage = storage or os.environ.get("BIOPROP_STORAGE_PATH") or None
    ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False)
    expected = [ip.strip() for ip in (expect or "").split(",") if ip.strip()]
    ok, problems = check_cluster(storage, ddp=ddp, expect=expected)
    for line in ok:
        console.print(f"[green]ok[/] {line}", highlight=False, soft_wrap=True)
    for line in problems:
        console.print(f"[red]problem[/] {line}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
