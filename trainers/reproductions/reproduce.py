"""Regenerate ``docs/results.md``: the CPU-scale reproductions, run as ``bioprop run`` sweeps.

``python -m trainers.reproductions.reproduce [--seeds 1] [--epochs 5] [--conv-epochs 4] [--out
docs/results.md]`` writes every sweep as a spec file under ``bioprop-runs/reproduce/``,
runs each through :func:`trainers.launch.run_experiment` (what ``bioprop run SPEC`` runs:
Ray Train workers, the data pipelines, MLflow), reads the finished settings' metrics back
and writes the tables, the seeds, the code's commit, the command's runtime, and text that
compares the numbers with the papers' claims (:mod:`trainers.reproductions.results_text`). Finished
settings are kept: the same command at the same commit resumes where it stopped.

Sweeps (``SWEEPS``):

- ``digits-mlp``: scikit-learn's digits (8x8, ``data.kind: digits``), a ReLU MLP with 2, 6
  and 10 hidden layers of 128 units, plain (Linear-ReLU) and with BatchNorm, for the rules
  ``bp fa ss usf frsf kp wm pfa dfa sa ia aa`` at their defaults; SGD lr 0.05, momentum
  0.9, weight decay 1e-4, batch 32;
- ``digits-bp-decay``: BP with the extra per-step decay of every rule above whose default
  has one (``kp``), the matched baseline;
- ``digits-lr-search``: every rule of ``trainers.names.RULE_NAMES`` on the 2-hidden-layer
  plain MLP with the same budget each, a ``search:`` over ``optim.lr`` on the grid
  ``LR_GRID`` (Ray Tune, one trial per rate): each rule's best learning rate beside its
  accuracy at BP's 0.05;
- ``conv-synthetic``: the synthetic 10-class JPEG set (32 px, ImageNet-style augmentation),
  ResNet-8 and ResNet-20 (``resnet20`` with 1 and 3 blocks per stage) for ``bp fa ss kp sa
  ia``; SGD lr 0.05, momentum 0.9, weight decay 1e-4, batch 32;
- ``breaking-mlp``, ``breaking-conv``: where each rule breaks (:mod:`trainers.reproductions.breaking_point`):
  every rule over depth x width of the digits MLP and a ResNet ladder, each grid point an
  ASHA search over the learning rate; ``--grid full`` (depths 2-12, widths 32-512, 1-5
  blocks) or ``reduced`` (the default, for a 2-core machine). Heat maps and the
  breaking-point table go to each sweep's parent run and, as ``*-gap.png``, next to
  ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from trainers.contracts import RunStatus
from trainers.names import RULE_NAMES
from trainers.reproductions.breaking_point import finish_study, study_records, study_specs
from trainers.reproductions.reproduce_grid import (
    BREAKING_GRIDS,
    BREAKING_SWEEPS,
    CONV_BLOCKS,
    CONV_RULES,
    DEPTHS,
    DIGITS_RULES,
    LR_GRID,
    SEARCHED,
    SWEEPS,
    WHOLE,
    extra_decays,
)
from trainers.reproductions.results_text import render
from trainers.spec import ExperimentSpec, parse_yaml

__all__ = [
    "BREAKING_SWEEPS",
    "CONV_BLOCKS",
    "CONV_RULES",
    "DEPTHS",
    "DIGITS_RULES",
    "LR_GRID",
    "SEARCHED",
    "SWEEPS",
    "collect",
    "main",
    "sweep_specs",
]

log = logging.getLogger("bioprop.reproduce")


def sweep_specs(
    seeds: int, epochs: int, conv_epochs: int, grid: str | dict[str, Any] = "reduced"
) -> dict[str, dict[str, Any]]:
    """The spec dict of every sweep, by name (``SWEEPS``); ``grid``: the breaking-point
    study's (a ``BREAKING_GRIDS`` name or such a dict)."""
    seed: int | list[int] = list(range(seeds)) if seeds > 1 else 0
    common = {
        "task": "classify",
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "batch_size": 32,
        "scale": {"workers": 1, "cpus_per_worker": 1},
        "max_failures": 0,
        "seed": seed,
        "tracking": {"experiment": "bioprop-reproduce"},
    }
    digits = {
        **common,
        "model": "mlp",
        "model_params": {"hidden": 128, "depth": DEPTHS, "bn": [False, True]},
        "data": {"kind": "digits", "image_size": 8},
        "schedule": {"epochs": epochs, "step_every": epochs},
        "checkpoint": {"every_epochs": epochs, "keep": 1},
    }
    conv = {
        **common,
        "model": "resnet20",
        "model_params": {"blocks": CONV_BLOCKS},
        "data": {
            "kind": "synthetic",
            "image_size": 32,
            "synth": {"classes": 10, "train_per_class": 48, "val_per_class": 16, "size": 40},
        },
        "rule": {"name": CONV_RULES},
        "schedule": {"epochs": conv_epochs, "step_every": conv_epochs},
        "checkpoint": {"every_epochs": conv_epochs, "keep": 1},
    }
    return {
        "digits-mlp": {**digits, "name": "reproduce-digits-mlp", "rule": {"name": DIGITS_RULES}},
        "digits-bp-decay": {
            **digits,
            "name": "reproduce-digits-bp-decay",
            "rule": {"name": "bp", "params": {"decay": extra_decays(DIGITS_RULES)}},
        },
        "digits-lr-search": {
            **digits,
            "name": "reproduce-digits-lr-search",
            "model_params": {"hidden": 128, "depth": 2, "bn": False},
            "rule": {"name": list(RULE_NAMES)},
            "search": {
                "metric": "val_acc",
                "mode": "max",
                "num_samples": 1,
                "space": {"optim.lr": {"grid": LR_GRID}},
            },
        },
        "conv-synthetic": {**conv, "name": "reproduce-conv-synthetic"},
        **study_specs(grid, epochs, conv_epochs, common, list(RULE_NAMES)),
    }


def commit() -> str:
    """The code's commit (``+dirty`` when the worktree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _setting_record(setting: ExperimentSpec, entry: dict[str, Any]) -> dict[str, Any]:
    metrics = entry.get("metrics") or {}
    return {
        "rule": setting.rule.name,
        "params": setting.rule.params,
        "model_params": setting.model_params,
        "seed": setting.seed,
        "status": entry.get("status"),
        "val_acc": metrics.get("val_acc"),
        "angle": metrics.get("align_mean_angle"),
        "grad_angle": metrics.get("galign_mean_grad_angle"),
        "epochs": metrics.get("epoch"),
    }


def collect(spec_dict: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    """Run one sweep spec as ``bioprop run`` does; one record per setting."""
    from trainers.launch import run_experiment

    spec = ExperimentSpec.model_validate(spec_dict)
    result = run_experiment(spec, job_id=job_id)
    by_label = dict(spec.settings())
    return [_setting_record(by_label[c["setting"]], c) for c in result["children"]]


def parts(specs: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(sweep, part name, spec dict)``: each sweep split along its model options (the
    digits MLP by depth and BatchNorm), so parts can run side by side."""
    out = []
    for name, spec_dict in specs.items():
        axes = {k: v for k, v in spec_dict["model_params"].items() if isinstance(v, list)}
        if name in WHOLE or not axes:
            out.append((name, name, spec_dict))
            continue
        keys = list(axes)
        for combo in itertools.product(*axes.values()):
            part = {
                **spec_dict,
                "model_params": {
                    **spec_dict["model_params"],
                    **dict(zip(keys, combo, strict=True)),
                },
            }
            label = "-".join(f"{k}{json.dumps(v)}" for k, v in zip(keys, combo, strict=True))
            out.append((name, f"{name}-{label}", part))
    return out


def _job_id(part: str, tag: str, seeds: int) -> str:
    """The job id of one part's run: the same command at the same commit resumes it."""
    return f"reproduce-{part}-{tag}-s{seeds}".replace('"', "")


def _trained_status(run: Any, epochs: int) -> str:
    """FINISHED for an MLflow run that finished having trained all ``epochs``, else FAILED
    (a run cut short, or one an earlier, stopped job left open)."""
    done = run.info.status == RunStatus.FINISHED and run.data.metrics.get("epoch", 0) >= epochs
    return "FINISHED" if done else "FAILED"


def _search_records(spec_dict: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    """One record per trial of a searched sweep, read from its MLflow child runs: ``rule``,
    ``lr`` (the sampled ``optim.lr``), ``status`` (FINISHED only when it trained every
    epoch), ``val_acc``, ``angle``, ``epochs``."""
    from trainers.contracts import TAG_RULE
    from trainers.tracking import find_job_runs

    epochs = spec_dict["schedule"]["epochs"]
    _, children = find_job_runs(job_id, spec_dict["tracking"]["uri"])
    return [
        {
            "rule": run.data.tags.get(TAG_RULE),
            "lr": float(run.data.params["optim.lr"]),
            "status": _trained_status(run, epochs),
            "val_acc": run.data.metrics.get("val_acc"),
            "angle": run.data.metrics.get("align_mean_angle"),
            "epochs": run.data.metrics.get("epoch"),
        }
        for run in children
        if "optim.lr" in run.data.params
    ]


def _records(spec_dict: dict[str, Any], result: dict[str, Any]) -> list[dict[str, Any]]:
    by_label = dict(ExperimentSpec.model_validate(spec_dict).settings())
    return [_setting_record(by_label[c["setting"]], c) for c in result.get("children", [])]


def run_all(
    seeds: int,
    epochs: int,
    conv_epochs: int,
    workdir: Path,
    *,
    parallel: int = 3,
    only: Sequence[str] = SWEEPS,
    grid: str | dict[str, Any] = "reduced",
    figures: Path | None = None,
) -> dict[str, Any]:
    """Write each sweep's spec files under ``workdir`` and run them, ``parallel`` drivers
    at a time (``python -m trainers.launch SPEC``, the driver ``bioprop submit`` spawns, on
    one local Ray cluster with ``parallel`` CPUs); the raw records. A breaking-point sweep's
    heat maps and table go to its parent run (:func:`trainers.reproductions.breaking_point.finish_study`)
    and its overview ``{sweep}-gap.png`` to ``figures`` when given."""
    import ray

    from trainers.ray_setup import init_local_ray

    workdir.mkdir(parents=True, exist_ok=True)
    code = commit()
    tag = code[:10].replace("+", "")
    out: dict[str, Any] = {"commit": code, "seeds": seeds, "commands": {}}
    out["sweeps"] = {name: [] for name in SWEEPS if name in only}
    todo = [p for p in parts(sweep_specs(seeds, epochs, conv_epochs, grid)) if p[0] in only]
    ctx = init_local_ray(num_cpus=parallel)
    env = {**os.environ, "RAY_ADDRESS": ctx.address_info["gcs_address"]}
    running: list[tuple[str, str, dict[str, Any], Path, subprocess.Popen, str]] = []
    try:
        while todo or running:
            while todo and len(running) < parallel:
                sweep, part, spec_dict = todo.pop(0)
                path = workdir / f"{part}.yaml"
                # one MLflow store per part: side-by-side drivers never wait on one SQLite lock
                uri = f"sqlite:///{workdir / 'mlflow'}-{part}.db"
                spec_dict = {**spec_dict, "tracking": {**spec_dict["tracking"], "uri": uri}}
                path.write_text(yaml.safe_dump(spec_dict, sort_keys=False))
                out["commands"][part] = f"bioprop run {os.path.relpath(path)}"
                result = workdir / f"{part}.result.json"
                job = _job_id(part, tag, seeds)
                cmd = [sys.executable, "-m", "trainers.launch", str(path), "--job-id", job]
                log_file = (workdir / f"{part}.log").open("w")
                proc = subprocess.Popen(
                    [*cmd, "--result", str(result)], env=env, stdout=log_file, stderr=log_file
                )
                running.append((sweep, part, spec_dict, result, proc, job))
                log.info("started %s", part)
            time.sleep(2)
            for item in list(running):
                sweep, part, spec_dict, result, proc, job = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                if sweep in BREAKING_SWEEPS:
                    out["sweeps"][sweep] += _study(sweep, spec_dict, job, workdir, figures)
                elif sweep in SEARCHED:
                    out["sweeps"][sweep] += _search_records(spec_dict, job)
                else:
                    found = json.loads(result.read_text()) if result.is_file() else {}
                    out["sweeps"][sweep] += _records(spec_dict, found)
                log.info("%s finished (exit %s)", part, proc.returncode)
    finally:
        for *_, proc, _job in running:
            proc.terminate()
        ray.shutdown()
    return out


def _study(
    sweep: str, spec_dict: dict[str, Any], job: str, workdir: Path, figures: Path | None
) -> list[dict[str, Any]]:
    """A finished breaking-point sweep's trial records, its heat maps and table logged to
    its parent run, the overview copied to ``figures``."""
    import shutil

    uri = spec_dict["tracking"]["uri"]
    records = study_records(job, uri, spec_dict["schedule"]["epochs"])
    folder = workdir / "breaking-point"
    finish_study(sweep, records, job, uri, folder)
    overview = folder / f"{sweep}-gap.png"
    if figures is not None and overview.is_file():
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(overview, figures / overview.name)
    return records


def written(workdir: Path, commit_sha: str, seeds: int) -> dict[str, Any]:
    """The records of every finished setting of every part written under ``workdir`` at
    ``commit_sha``, read back from each part's MLflow store: for rendering a run stopped
    before the end (settings still running or not started are left out)."""
    from trainers.contracts import TAG_SETTING
    from trainers.tracking import find_job_runs

    tag = commit_sha[:10].replace("+", "")
    out: dict[str, Any] = {"sweeps": {}, "commands": {}}
    for spec_path in sorted(workdir.glob("*.yaml")):
        part = spec_path.stem
        sweep = next((s for s in SWEEPS if part.startswith(f"{s}-") or part == s), None)
        spec_dict = parse_yaml(spec_path.read_text())
        uri = (spec_dict.get("tracking") or {}).get("uri")
        if sweep is None or not uri:
            continue
        out["sweeps"].setdefault(sweep, [])
        out["commands"][part] = f"bioprop run {os.path.relpath(spec_path)}"
        if sweep in BREAKING_SWEEPS:
            epochs = spec_dict["schedule"]["epochs"]
            out["sweeps"][sweep] += study_records(_job_id(part, tag, seeds), uri, epochs)
            continue
        if sweep in SEARCHED:
            out["sweeps"][sweep] += _search_records(spec_dict, _job_id(part, tag, seeds))
            continue
        _, children = find_job_runs(_job_id(part, tag, seeds), uri)
        epochs = spec_dict["schedule"]["epochs"]
        entries = [
            {
                "setting": run.data.tags.get(TAG_SETTING),
                "status": _trained_status(run, epochs),
                "metrics": run.data.metrics,
            }
            for run in children
        ]
        out["sweeps"][sweep] += _records(spec_dict, {"children": entries})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m trainers.reproductions.reproduce", description=__doc__
    )
    ap.add_argument("--seeds", type=int, default=1, help="seeds per setting (0, 1, ...)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the digits MLP sweeps")
    ap.add_argument("--conv-epochs", type=int, default=4, help="epochs of the conv sweep")
    ap.add_argument("--out", default="docs/results.md", help="markdown file to write")
    ap.add_argument("--parallel", type=int, default=3, help="sweep parts run side by side")
    ap.add_argument(
        "--render-only",
        metavar="COMMIT",
        default=None,
        help="run nothing: render the finished parts in --workdir, run at COMMIT",
    )
    ap.add_argument("--runtime-s", type=float, default=0.0, help="with --render-only")
    ap.add_argument(
        "--only", nargs="+", choices=SWEEPS, default=list(SWEEPS), help="run these sweeps only"
    )
    ap.add_argument(
        "--grid",
        choices=list(BREAKING_GRIDS),
        default="reduced",
        help="the breaking-point study's grid (full: depths 2-12, widths 32-512)",
    )
    ap.add_argument("--json", default=None, help="also write the raw records here")
    ap.add_argument("--workdir", default="bioprop-runs/reproduce", help="spec files go here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("ray", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.render_only:  # the parts finished so far, e.g. after an interrupted run
        results = written(Path(args.workdir).absolute(), args.render_only, args.seeds)
        results.update(commit=args.render_only, seeds=args.seeds, runtime_s=args.runtime_s)
        results["stopped"] = True
        results["argv"] = ["python", "-m", "trainers.reproductions.reproduce"]
        results["machine"] = f"{platform.machine()}, {_cpus()} CPU cores"
        text = render(results, epochs=args.epochs, conv_epochs=args.conv_epochs)
        Path(args.out).write_text(text)
        return
    started = time.monotonic()
    results = run_all(
        args.seeds,
        args.epochs,
        args.conv_epochs,
        Path(args.workdir).absolute(),
        parallel=args.parallel,
        only=args.only,
        grid=args.grid,
        figures=Path(args.out).parent,
    )
    results["runtime_s"] = time.monotonic() - started
    given = list(sys.argv[1:] if argv is None else argv)
    results["argv"] = ["python", "-m", "trainers.reproductions.reproduce", *given]
    results["machine"] = f"{platform.machine()}, {_cpus()} CPU cores"
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    Path(args.out).write_text(render(results, epochs=args.epochs, conv_epochs=args.conv_epochs))
    log.info("wrote %s in %.0f s", args.out, results["runtime_s"])


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
