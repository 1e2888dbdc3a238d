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


@synth_app.command("coco")
def synth_coco_cmd(
    out: Path = typer.Option(..., "--out", help="folder to create"),
    images: int = typer.Option(32, "--images", min=1, help="train images (val: a quarter)"),
    val_images: int | None = typer.Option(None, "--val-images", min=1),
    size: int = typer.Option(64, "--size", min=16, help="image height, pixels"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """COCO-format set: JPEG files with drawn boxes and instances json with the true boxes."""
    from data_pipelines.synth import synth_coco

    total = images + (val_images or max(1, images // 4))
    with _progress(f"writing {total} JPEG files", total) as advance:
        synth_coco(
            out, images=images, val_images=val_images, size=size, seed=seed, progress=advance
        )
    console.print(f"wrote {total} images and annotations/instances_{{train,val}}.json to {out}")


@app.command("pack")
def pack_cmd(
    root: Path = typer.Argument(..., help="ImageNet-layout folder (train/ and val/)"),
    out: Path = typer.Option(..., "--out", help="folder for the tar shards"),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="images per tar"),
    seed: int = typer.Option(0, "--seed", help="order of the train samples"),
) -> None:
    """Pack an ImageNet folder into webdataset tar shards (data.root may point at either)."""
    from data_pipelines.folder import index_folder
    from data_pipelines.pack import pack_imagefolder

    total = sum(len(index_folder(root / split)) for split in ("train", "val"))
    with _progress(f"packing {total} images", total) as advance:
        pack_imagefolder(root, out, shard_size=shard_size, seed=seed, progress=advance)
    console.print(f"packed {total} images into {out}")


@app.command("check")
def check_cmd(
    root: Path = typer.Argument(..., help="ImageNet-layout folder"),
    limit: int = typer.Option(20, "--limit", min=1),
) -> None:
    """Decode every image of a folder with PIL and list the ones that fail (exit 1 if any)."""
    from data_pipelines.check import find_undecodable
    from data_pipelines.folder import index_folder

    train = index_folder(root / "train")
    paths = [train.root / f for f in train.files]
    val = index_folder(root / "val", classes=train.classes)
    paths += [val.root / f for f in val.files]
    bad = find_undecodable(paths, limit=limit)
    for path, reason in bad.items():
        typer.echo(f"{path}: {reason}")
    console.print(f"checked {len(paths)} files, {len(bad)} undecodable")
    raise typer.Exit(1 if bad else 0)


@app.command("bench")
def bench_cmd(
    root: Path | None = typer.Option(
        None, "--root", help="ImageNet-layout folder (default: build a synthetic one)"
    ),
    image_size: int = typer.Option(224, "--image-size"),
    batch_size: int = typer.Option(64, "--batch-size"),
    threads: int = typer.Option(2, "--threads", help="DALI threads = DataLoader workers"),
    batches: int = typer.Option(20, "--batches"),
    rounds: int = typer.Option(2, "--rounds"),
    synth_size: int = typer.Option(320, "--synth-size", help="side of the synthetic JPEG files"),
    synth_images: int = typer.Option(1024, "--synth-images", help="synthetic train images"),
) -> None:
    """Images/s of the DALI train pipeline vs torchvision ImageFolder + DataLoader."""
    from rich.table import Table

    from data_pipelines.bench import bench_loader
    from data_pipelines.synth import atomic_build, synth_imagenet

    if root is None:
        classes = 8
        per_class = max(1, synth_images // classes)
        root = Path("bioprop-runs/data") / f"bench-{classes}x{per_class}-{synth_size}px"
        with _progress("building the synthetic bench set", classes * (per_class + 1)) as advance:
            root = atomic_build(
                root,
                lambda tmp: synth_imagenet(
                    tmp,
                    classes=classes,
                    train_per_class=per_class,
                    val_per_class=1,
                    size=synth_size,
                    progress=advance,
                ),
            )
    with console.status("timing both loaders"):
        result = bench_loader(
            root,
            image_size=image_size,
            batch_size=batch_size,
            threads=threads,
            batches=batches,
            rounds=rounds,
        )
    table = Table(title=f"train loader, {threads} threads, batch {batch_size}, {image_size}px")
    table.add_column("loader")
    table.add_column("images/s", justify="right")
    table.add_row(f"DALI ({result['dali_decoding']})", f"{result['dali_images_per_s']:.1f}")
    table.add_row("torchvision ImageFolder+DataLoader", f"{result['torchvision_images_per_s']:.1f}")
    table.add_row("speed-up", f"{result['speedup']:.2f}x")
    console.print(table)
    _print_json(result)


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))
