"""``bioprop data ...``: build synthetic sets, pack folders into shards, benchmark loaders.

A typer sub-app; ``service/cli.py`` mounts it with ``app.add_typer(cli.app, name="data")``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["app"]

app = typer.Typer(
    help="Data sets: synthetic builders, packing, loader benchmark.", no_args_is_help=True
)
synth_app = typer.Typer(help="Write synthetic data sets of real JPEG files.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
console = Console(stderr=True)


@contextmanager
def _progress(label: str, total: int):
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n=1: progress.advance(task, n)


@synth_app.command("imagenet")
def synth_imagenet_cmd(
    out: Path = typer.Option(..., "--out", help="folder to create (train/ and val/ inside)"),
    classes: int = typer.Option(4, "--classes", min=2),
    train_per_class: int = typer.Option(48, "--train-per-class", min=1),
    val_per_class: int = typer.Option(16, "--val-per-class", min=1),
    size: int = typer.Option(40, "--size", min=8, help="side of each JPEG, pixels"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """ImageNet-layout JPEG folder whose classes a small conv net can learn."""
    from data_pipelines.synth import synth_imagenet

    total = classes * (train_per_class + val_per_class)
    with _progress(f"writing {total} JPEG files", total) as advance:
        synth_imagenet(
            out,
            classes=classes,
            train_per_class=train_per_class,
            val_per_class=val_per_class,
            size=size,
            seed=seed,
            progress=advance,
        )
    console.print(f"wrote {total} images in {classes} classes to {out}")


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))
