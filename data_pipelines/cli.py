"""``bioprop data ...``: build synthetic sets, pack folders into shards, benchmark loaders.

A typer sub-app; ``service/cli.py`` mounts it with ``app.add_typer(cli.app, name="data")``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["app"]

app = typer.Typer(
    help="Data sets: synthetic builders, packing, loader benchmark.", no_args_is_help=True
)
synth_app = typer.Typer(help="Write synthetic data sets of real JPEG files.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
prepare_app = typer.Typer(
    help="Write ImageNet or COCO, from the archives users hold, as the loaders read them.",
    no_args_is_help=True,
)
app.add_typer(prepare_app, name="prepare")
console = Console(stderr=True)


class _Rate(ProgressColumn):
    """Images per second of a task (rich's speed estimate)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "-- img/s", style="progress.data.speed")


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


@contextmanager
def _rate_progress(label: str):
    """A bar with throughput and ETA; yields ``(advance, set_total)``. The bar appears at
    the first of them (once the source is read and checked), so a source refused before
    that prints its error alone."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task(label, total=None)

    def shown() -> Progress:
        if not progress.live.is_started:
            progress.start()
        return progress

    try:
        yield (
            lambda n=1: shown().advance(task, n),
            lambda total: shown().update(task, total=total),
        )
    finally:
        if progress.live.is_started:
            progress.stop()


def _refuse(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)  # paths whole
    raise typer.Exit(2)


@prepare_app.command("imagenet")
def prepare_imagenet_cmd(
    src: Path = typer.Argument(
        ...,
        help="folder with ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
        "ILSVRC2012_devkit_t12.tar.gz, or the Kaggle layout (ILSVRC/Data/CLS-LOC, "
        "LOC_val_solution.csv)",
    ),
    dest: str = typer.Argument(..., help="folder or s3://bucket/prefix to write"),
    fmt: str = typer.Option(
        "folder", "--format", help="folder (train/<wnid>/, val/<wnid>/) or shards (webdataset)"
    ),
    subset: bool = typer.Option(
        False, "--subset", help="accept a deliberate part of ImageNet (fewer classes or images)"
    ),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="images per shard"),
    seed: int = typer.Option(0, "--seed", help="order of the train samples in the shards"),
    threads: int = typer.Option(4, "--threads", min=1, help="files or shards written at once"),
) -> None:
    """ImageNet from the official archives or the Kaggle layout, checked (1,000 classes,
    1,281,167 train and 50,000 val images) and written as an ImageFolder or shards;
    run it again to resume."""
    from data_pipelines.prepare_sets import prepare_imagenet

    options = dict(fmt=fmt, subset=subset, shard_size=shard_size, seed=seed, threads=threads)
    _prepare("ImageNet", prepare_imagenet, src, dest, **options)


@prepare_app.command("coco")
def prepare_coco_cmd(
    src: Path = typer.Argument(
        ..., help="folder with train2017.zip, val2017.zip and annotations_trainval2017.zip"
    ),
    dest: str = typer.Argument(
        ..., help="folder, or s3://bucket/prefix for shards, to write (data.root of a coco spec)"
    ),
    fmt: str = typer.Option(
        "folder",
        "--format",
        help="folder (train2017/, val2017/, annotations/) or shards (webdataset: each image "
        "with its boxes)",
    ),
    subset: bool = typer.Option(False, "--subset", help="accept a deliberate part of COCO"),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="images per shard"),
    seed: int = typer.Option(0, "--seed", help="order of the train samples in the shards"),
    threads: int = typer.Option(4, "--threads", min=1, help="files or shards written at once"),
) -> None:
    """COCO 2017 from the official zips, annotations checked against the images, into the
    folder the coco kind reads or into shards; run it again to resume."""
    from data_pipelines.prepare_sets import prepare_coco

    options = dict(fmt=fmt, subset=subset, shard_size=shard_size, seed=seed, threads=threads)
    _prepare("COCO", prepare_coco, src, dest, **options)


def _prepare(name: str, prepare, src: Path, dest: str, **options) -> None:
    """Run ``prepare(src, dest, **options)`` under a progress bar (rate, ETA); a source or
    destination it refuses exits 2 naming the file; prints what was written."""
    from data_pipelines.imagenet import SourceError
    from data_pipelines.objstore import DataRootError
    from data_pipelines.prepare_sets import FORMATS

    if options["fmt"] not in FORMATS:
        raise typer.BadParameter(
            f"one of {', '.join(FORMATS)}, not {options['fmt']!r}", param_hint="--format"
        )
    where = _dest(dest)
    try:  # the bar ends before an error is printed below it
        with _rate_progress(f"writing {name} ({options['fmt']})") as (advance, set_total):
            summary = prepare(src, where, progress=advance, on_total=set_total, **options)
    except (SourceError, DataRootError, ValueError, FileNotFoundError) as exc:
        _refuse(exc)
    if summary["kept"]:
        console.print(f"resumed: kept {summary['kept']} files an earlier run had written")
    console.print(f"wrote {summary['counts']} to {summary['dest']}")
    _print_json(summary)


def _dest(value: str) -> str | Path:
    """A CLI root: a URI checked as ``data.root`` is (:func:`parse_data_uri`), else a path."""
    from data_pipelines.location import to_root

    try:
        return to_root(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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
    root: Path = typer.Argument(
        ...,
        help="ImageNet-layout folder (train/ and val/) or COCO folder (annotations/ and the "
        "images)",
    ),
    out: str = typer.Option(..., "--out", help="folder or s3://bucket/prefix for the shards"),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="images per tar"),
    seed: int = typer.Option(0, "--seed", help="order of the train samples"),
) -> None:
    """Pack an ImageNet or COCO folder into webdataset tar shards (data.root may point at
    either; a COCO sample carries its image's boxes); run it again to resume."""
    from data_pipelines.coco import index_coco
    from data_pipelines.coco_pack import pack_coco
    from data_pipelines.folder import index_folder
    from data_pipelines.objstore import DataRootError
    from data_pipelines.pack import pack_imagefolder

    if not root.is_dir():
        _refuse(FileNotFoundError(f"folder not found: {root}"))
    coco = (root / "annotations").is_dir()
    try:
        if coco:
            total = sum(len(index_coco(root, split)) for split in ("train", "val"))
        else:
            total = sum(len(index_folder(root / split)) for split in ("train", "val"))
    except (ValueError, FileNotFoundError) as exc:
        _refuse(exc)
    pack = pack_coco if coco else pack_imagefolder
    where = _dest(out)
    try:  # the bar ends before an error is printed below it
        with _progress(f"packing {total} images", total) as advance:
            pack(root, where, shard_size=shard_size, seed=seed, progress=advance)
    except (DataRootError, ValueError, FileNotFoundError) as exc:
        _refuse(exc)
    console.print(f"packed {total} {'COCO ' if coco else ''}images into {out}")


@app.command("check")
def check_cmd(
    root: str = typer.Argument(
        ...,
        help="ImageNet-layout folder, COCO folder (annotations checked against the images) "
        "or packed shards of either, local or s3://bucket/prefix",
    ),
    limit: int = typer.Option(20, "--limit", min=1, help="list at most this many bad files"),
) -> None:
    """Decode every image of a folder (or of its shards) with PIL and list the ones that fail
    (exit 1 if any; exit 2 naming the root when it cannot be read)."""
    from itertools import chain

    from data_pipelines.check import find_undecodable
    from data_pipelines.coco import index_coco
    from data_pipelines.folder import index_sources, index_split
    from data_pipelines.kinds import check_remote_root
    from data_pipelines.location import is_uri
    from data_pipelines.objstore import DataRootError
    from data_pipelines.pack import is_packed, iter_packed_images, packed_kind, read_packed

    where = _dest(root)
    if not is_uri(where) and not Path(where).is_dir():
        _refuse(FileNotFoundError(f"{where}: no such folder"))
    try:
        kind = packed_kind(where) if is_packed(where) else "imagefolder"
        if is_uri(where):
            check_remote_root(str(where), kind)
        if is_packed(where):
            splits = [read_packed(where, split, kind=kind) for split in ("train", "val")]
            count = sum(len(s) for s in splits)
            sources = chain.from_iterable(iter_packed_images(s) for s in splits)
        elif not is_uri(where) and (Path(where) / "annotations").is_dir():  # a COCO folder
            splits = [index_coco(where, split) for split in ("train", "val")]  # boxes checked
            count = sum(len(s) for s in splits)
            sources = (s.image_root / f for s in splits for f in s.files)
        else:
            train = index_split(where, "train")
            val = index_split(where, "val", classes=train.classes)
            count = len(train) + len(val)
            sources = chain(index_sources(train), index_sources(val))
        bad = find_undecodable(sources, limit=limit)
    except (DataRootError, FileNotFoundError, ValueError) as exc:
        _refuse(exc)
    for path, reason in bad.items():
        typer.echo(f"{path}: {reason}")
    console.print(f"checked {count} files, {len(bad)} undecodable")
    raise typer.Exit(1 if bad else 0)


@app.command("bench")
def bench_cmd(
    roots: list[str] = typer.Option(
        [],
        "--root",
        help="ImageNet-layout folder (default: build a synthetic one); given more than once "
        "(folders, shards, s3:// prefixes; COCO folders and COCO shards too, read by the "
        "detection pipeline): the DALI pipeline over each, side by side",
    ),
    image_size: int = typer.Option(224, "--image-size"),
    batch_size: int = typer.Option(64, "--batch-size"),
    threads: int = typer.Option(2, "--threads", help="DALI threads = DataLoader workers"),
    batches: int = typer.Option(20, "--batches"),
    rounds: int = typer.Option(2, "--rounds"),
    synth_size: int = typer.Option(320, "--synth-size", help="side of the synthetic JPEG files"),
    synth_images: int = typer.Option(1024, "--synth-images", help="synthetic train images"),
    cached: list[str] = typer.Option(
        [],
        "--cached-root",
        help="packed shards on object storage read with data.cache (copied to the node's "
        "cache first, the copy timed apart), side by side with the --root ones",
    ),
) -> None:
    """Images/s of the DALI train pipeline vs torchvision ImageFolder + DataLoader."""
    from rich.table import Table

    from data_pipelines.bench import bench_loader, bench_roots
    from data_pipelines.synth import atomic_build, synth_imagenet

    if len(roots) > 1 or (roots and "://" in roots[0]) or cached:  # torchvision: no s3://
        with console.status(f"timing the DALI train pipeline over {len(roots)} roots"):
            result = bench_roots(
                [_dest(r) for r in roots],
                cached=cached,
                image_size=image_size,
                batch_size=batch_size,
                threads=threads,
                batches=batches,
                rounds=rounds,
            )
        table = Table(title=f"DALI train loader, {threads} threads, batch {batch_size}")
        table.add_column("data.root")
        table.add_column("images/s", justify="right")
        for name, rate in result["images_per_s"].items():
            table.add_row(name, f"{rate:.1f}")
        console.print(table)
        for name, seconds in result.get("cache_copy_s", {}).items():
            console.print(f"{name}: copied to the cache in {seconds:.1f} s before timing")
        _print_json(result)
        return
    root = Path(roots[0]) if roots else None
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
