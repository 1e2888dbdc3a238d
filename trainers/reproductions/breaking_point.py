"""Where each rule breaks: every rule over a depth x width grid of the digits MLP and a conv
ladder, each rule at its own best learning rate; a part of ``python -m trainers.reproductions.reproduce``.

The study is two sweeps (``trainers.reproductions.reproduce_grid.BREAKING_SWEEPS``), each one spec and one
job (one MLflow parent run):

- ``breaking-mlp``: ``data.kind: digits``, ``model: mlp`` with ``depth`` x ``hidden`` from
  ``BREAKING_GRIDS[grid]`` (full: depths 2-12, widths 32-512), every rule of
  ``trainers.names.RULE_NAMES``;
- ``breaking-conv``: the synthetic 10-class image set, ``resnet20`` with 1-5 residual blocks
  per stage (the ladder's depth; it has no width axis), every rule.

Every grid point (rule, depth, width) runs a Ray Tune search over ``optim.lr`` (the grid's
``lrs``, one trial each) with ASHA early stopping inside the same job
(:mod:`trainers.search_space`). A point's value is its best trial among those that trained
every epoch (ASHA stops the others early). From the trials (read back from the child runs)
:func:`summarize` takes each point's best; :func:`finish_study` writes, per rule, a heat map
of the accuracy gap to BP (points, BP's best at the same point minus the rule's) and one of
the final mean alignment angle (``align_mean_angle``) over depth x width, the breaking-point
table (per rule, the first point, the smallest depth and the smallest width where it falls
more than ``BREAKING_GAP`` points behind BP) and the records, and logs them to the sweep's
parent run under ``breaking-point/``. :func:`section` is the ``docs/results.md`` text: the
tables and claims decided by the numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainers.contracts import RunStatus
from trainers.reproductions.reproduce_grid import BREAKING_GAP, BREAKING_GRIDS, LR_GRID

__all__ = [
    "bp_failed",
    "breaking_points",
    "finish_study",
    "heatmaps",
    "section",
    "study_records",
    "study_specs",
    "summarize",
]

GROWS = 2.0  # points a gap must widen from the shallowest to the deepest net to "grow"
# BP's best accuracy below twice chance (10 classes in both sets): BP itself did not learn
# there, so a gap of 0 would read "never broken" where nothing was compared
BP_LEARNS = 0.2
LIT = "the literature as issue 25 summarizes it"  # claims without a paper in papers.md
Point = tuple[str, int, int]  # rule, depth (hidden layers or blocks per stage), width (0: none)


def study_specs(
    grid: str | dict[str, Any],
    epochs: int,
    conv_epochs: int,
    common: dict[str, Any],
    rules: list[str],
) -> dict[str, dict[str, Any]]:
    """The two sweeps' spec dicts; ``grid``: a ``BREAKING_GRIDS`` name or such a dict."""
    g = BREAKING_GRIDS[grid] if isinstance(grid, str) else grid
    search = {
        "metric": "val_acc",
        "mode": "max",
        "num_samples": 1,
        "space": {"optim.lr": {"grid": list(g.get("lrs", LR_GRID))}},
        "asha": {"grace_period": 1, "reduction_factor": 3},
    }
    mlp = {
        **common,
        "name": "reproduce-breaking-mlp",
        "model": "mlp",
        "model_params": {"hidden": list(g["widths"]), "depth": list(g["depths"]), "bn": False},
        "data": {"kind": "digits", "image_size": 8},
        "rule": {"name": list(rules)},
        "schedule": {"epochs": epochs, "step_every": epochs},
        "checkpoint": {"every_epochs": epochs, "keep": 1},
        "search": search,
    }
    conv = {
        **common,
        "name": "reproduce-breaking-conv",
        "model": "resnet20",
        "model_params": {"blocks": list(g["blocks"])},
        "data": {
            "kind": "synthetic",
            "image_size": 32,
            "synth": {"classes": 10, "train_per_class": 48, "val_per_class": 16, "size": 40},
        },
        "rule": {"name": list(rules)},
        "schedule": {"epochs": conv_epochs, "step_every": conv_epochs},
        "checkpoint": {"every_epochs": conv_epochs, "keep": 1},
        "search": search,
    }
    return {"breaking-mlp": mlp, "breaking-conv": conv}


def _param(params: dict[str, str], key: str) -> int:
    return int(json.loads(params[key])) if key in params else 0


def study_records(job_id: str, uri: str, epochs: int) -> list[dict[str, Any]]:
    """One record per trial of the job, from its MLflow child runs: ``rule``, ``depth``
    (``model_params.depth``, else ``.blocks``), ``width`` (``model_params.hidden``, else 0),
    ``lr``, ``status`` (FINISHED only when it trained all ``epochs``), ``val_acc``,
    ``angle``, ``epochs``."""
    from trainers.contracts import TAG_RULE
    from trainers.tracking import find_job_runs

    _, children = find_job_runs(job_id, uri)
    out = []
    for run in children:
        p, m = run.data.params, run.data.metrics
        done = run.info.status == RunStatus.FINISHED and m.get("epoch", 0) >= epochs
        out.append(
            {
                "rule": run.data.tags.get(TAG_RULE),
                "depth": _param(p, "model_params.depth") or _param(p, "model_params.blocks"),
                "width": _param(p, "model_params.hidden"),
                "lr": float(p["optim.lr"]) if "optim.lr" in p else None,
                "status": "FINISHED" if done else "FAILED",
                "val_acc": m.get("val_acc"),
                "angle": m.get("align_mean_angle"),
                "epochs": m.get("epoch"),
            }
        )
    return out


def summarize(records: Iterable[dict[str, Any]]) -> dict[Point, dict[str, Any]]:
    """Per grid point, its best finished trial (``val_acc``, ``angle``, ``lr``) and ``gap``:
    BP's best at the same point minus the rule's, in points (None without BP there, or where
    BP's best is below ``BP_LEARNS``: then ``bp_failed`` is True)."""
    best: dict[Point, dict[str, Any]] = {}
    for r in records:
        if r["status"] != "FINISHED" or r.get("val_acc") is None:
            continue
        key = (r["rule"], int(r["depth"]), int(r.get("width") or 0))
        if key not in best or r["val_acc"] > best[key]["val_acc"]:
            best[key] = {k: r.get(k) for k in ("val_acc", "angle", "lr")}
    for (_, depth, width), b in best.items():
        bp = best.get(("bp", depth, width))
        b["bp_failed"] = bp is not None and bp["val_acc"] < BP_LEARNS
        compared = bp is not None and not b["bp_failed"]
        b["gap"] = 100.0 * (bp["val_acc"] - b["val_acc"]) if compared else None
    return best


def bp_failed(summary: dict[Point, dict[str, Any]]) -> list[tuple[int, int]]:
    """The points (depth, width) where BP itself did not learn (``BP_LEARNS``)."""
    return sorted((d, w) for (r, d, w), v in summary.items() if r == "bp" and v["bp_failed"])


def _axes(summary: dict[Point, dict[str, Any]]) -> tuple[list[str], list[int], list[int]]:
    from trainers.names import RULE_NAMES

    rules = [r for r in RULE_NAMES if any(k[0] == r for k in summary)]
    rules += sorted({k[0] for k in summary} - set(rules))
    depths = sorted({k[1] for k in summary})
    widths = sorted({k[2] for k in summary})
    return rules, depths, widths


def breaking_points(summary: dict[Point, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule other than BP: ``first`` (the smallest depth, then the smallest width at it,
    where the rule falls more than ``BREAKING_GAP`` points behind BP), ``depth`` and
    ``width`` (the smallest of each over every broken point), ``worst`` (the largest gap and
    its point) and ``measured`` (points with a gap); None entries where it never breaks."""
    rules, _, _ = _axes(summary)
    out = {}
    for rule in rules:
        if rule == "bp":
            continue
        points = sorted((d, w, v["gap"]) for (r, d, w), v in summary.items() if r == rule)
        gaps = [(d, w, g) for d, w, g in points if g is not None]
        broken = [(d, w) for d, w, g in gaps if g > BREAKING_GAP]
        worst = max(gaps, key=lambda p: p[2]) if gaps else None
        out[rule] = {
            "first": broken[0] if broken else None,
            "depth": min(d for d, _ in broken) if broken else None,
            "width": min(w for _, w in broken) if broken else None,
            "worst": worst,
            "measured": len(gaps),
        }
    return out


def heatmaps(summary: dict[Point, dict[str, Any]], folder: Path, prefix: str) -> list[Path]:
    """``{prefix}-{rule}.png`` per rule: the gap to BP and the final mean angle over depth x
    width (one row of cells for a ladder without widths), and ``{prefix}-gap.png``: every
    rule's gap in one figure. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rules, depths, widths = _axes(summary)

    def grid(rule: str, field: str):
        cells = np.full((len(depths), len(widths)), np.nan)
        for i, d in enumerate(depths):
            for j, w in enumerate(widths):
                value = summary.get((rule, d, w), {}).get(field)
                cells[i, j] = np.nan if value is None else value
        return cells

    def draw(ax, cells, title: str, cmap: str, vmin: float, vmax: float) -> None:
        image = ax.imshow(cells, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
        ax.set_xticks(range(len(widths)), [str(w) if w else "-" for w in widths])
        ax.set_yticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("width (units per layer)" if any(widths) else "")
        ax.set_ylabel("depth")
        ax.set_title(title, fontsize=9)
        for (i, j), v in np.ndenumerate(cells):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
        plt.colorbar(image, ax=ax, fraction=0.046)

    files = []
    gap_max = max([abs(v["gap"]) for v in summary.values() if v["gap"] is not None] + [10.0])
    for rule in rules:
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
        draw(left, grid(rule, "gap"), f"{rule}: val accuracy gap to BP (points)", "RdBu_r",
             -gap_max, gap_max)  # fmt: skip
        draw(right, grid(rule, "angle"), f"{rule}: final mean angle (deg)", "viridis", 0, 90)
        fig.tight_layout()
        files.append(folder / f"{prefix}-{rule}.png")
        fig.savefig(files[-1], dpi=90)
        plt.close(fig)
    cols = min(5, len(rules))
    rows = math.ceil(len(rules) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, rule in zip(axes.flat, rules, strict=False):
        draw(ax, grid(rule, "gap"), f"{rule}: gap to BP", "RdBu_r", -gap_max, gap_max)
    for ax in list(axes.flat)[len(rules) :]:
        ax.axis("off")
    fig.tight_layout()
    files.append(folder / f"{prefix}-gap.png")
    fig.savefig(files[-1], dpi=80)
    plt.close(fig)
    return files


def table(summary: dict[Point, dict[str, Any]], ladder: bool = False) -> list[str]:
    """The breaking-point table (markdown lines)."""
    depth = "blocks per stage" if ladder else "depth"
    head = [
        f"| rule | first broken ({depth}{'' if ladder else ', width'}) | smallest {depth} "
        + ("" if ladder else "| smallest width ")
        + "| worst gap (points, at) | points measured |",
        "| --- | --- | --- " + ("" if ladder else "| --- ") + "| --- | --- |",
    ]
    rows = []
    for rule, b in breaking_points(summary).items():
        first = "never" if b["first"] is None else _point(b["first"], ladder)
        worst = "-" if b["worst"] is None else (
            f"{b['worst'][2]:.1f} at {_point(b['worst'][:2], ladder)}"
        )  # fmt: skip
        cells = [rule, first, _opt(b["depth"])]
        if not ladder:
            cells.append(_opt(b["width"]))
        rows.append("| " + " | ".join([*cells, worst, str(b["measured"])]) + " |")
    return head + rows


def _bp_failed_note(summary: dict[Point, dict[str, Any]], ladder: bool) -> list[str]:
    failed = bp_failed(summary)
    if not failed:
        return []
    where = "; ".join(_point(p, ladder) for p in failed)
    return [
        f"BP itself did not learn at {where} (its best accuracy below {100 * BP_LEARNS:.0f} "
        "%, twice chance): those points compare nothing and are left out of the table's "
        "gaps and of the claims below (every rule sat at chance there too; a gap of 0 "
        "would read as 'never broken').",
        "",
    ]


def _list(values: list[int]) -> str:
    return ", ".join(map(str, values)) or "none run"


def _point(p: tuple[int, int], ladder: bool) -> str:
    return f"{p[0]}" if ladder else f"{p[0]}, {p[1]}"


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def finish_study(
    name: str,
    records: list[dict[str, Any]],
    job_id: str,
    uri: str,
    folder: Path,
) -> dict[Point, dict[str, Any]]:
    """Summarize sweep ``name``'s trials, write its heat maps, table and records under
    ``folder`` and log them to the job's parent run (artifact folder ``breaking-point``).
    Returns the summary."""
    from mlflow import MlflowClient

    from trainers.tracking import find_job_runs

    summary = summarize(records)
    files = heatmaps(summary, folder, name) if summary else []
    ladder = name.endswith("conv")
    md = folder / f"{name}-table.md"
    md.write_text("\n".join(table(summary, ladder)) + "\n")
    raw = folder / f"{name}-records.json"
    raw.write_text(json.dumps(records, indent=1))
    parent, _ = find_job_runs(job_id, uri)
    if parent is not None:
        client = MlflowClient(uri)
        for path in [*files, md, raw]:
            client.log_artifact(parent.info.run_id, str(path), artifact_path="breaking-point")
    return summary


def _gap_by_depth(summary, rule: str) -> dict[int, float]:
    """A rule's gap per depth, the mean over the widths measured there."""
    per: dict[int, list[float]] = {}
    for (r, d, _), v in summary.items():
        if r == rule and v["gap"] is not None:
            per.setdefault(d, []).append(v["gap"])
    return {d: sum(g) / len(g) for d, g in sorted(per.items())}


def _angle_by_width(summary, rule: str) -> dict[int, float]:
    per: dict[int, list[float]] = {}
    for (r, _, w), v in summary.items():
        if r != rule or v.get("bp_failed") or v.get("angle") is None:
            continue
        if not math.isnan(v["angle"]):
            per.setdefault(w, []).append(v["angle"])
    return {w: sum(a) / len(a) for w, a in sorted(per.items())}


def _claims(mlp, conv) -> tuple[list[str], list[str], list[str]]:
    """(agrees, disagrees, not measured): each claim decided by the printed numbers."""
    agree: list[str] = []
    disagree: list[str] = []
    missing: list[str] = []

    def grows(summary, rule: str, claim: str, where: str) -> None:
        gaps = _gap_by_depth(summary, rule) if summary else {}
        if len(gaps) < 2:
            missing.append(claim)
            return
        (d0, g0), (d1, g1) = next(iter(gaps.items())), list(gaps.items())[-1]
        text = (
            f"{claim}: {rule}'s gap to BP {g0:.1f} points at depth {d0}, {g1:.1f} at depth "
            f"{d1} ({where}, mean over widths; grows = widens by {GROWS:.0f} or more)"
        )
        (agree if g1 - g0 >= GROWS else disagree).append(text)

    def holds(summary, rule: str, claim: str, where: str) -> None:
        gaps = [v["gap"] for (r, *_), v in (summary or {}).items() if r == rule]
        gaps = [g for g in gaps if g is not None]
        if not gaps:
            missing.append(claim)
            return
        worst = max(gaps)
        text = (
            f"{claim}: {rule}'s largest gap to BP over the {where} is {worst:.1f} points "
            f"(holds = never more than {BREAKING_GAP:.0f})"
        )
        (agree if worst <= BREAKING_GAP else disagree).append(text)

    grows(mlp, "fa", f"FA falls behind BP as the net deepens ({LIT})", "digits MLP")
    grows(mlp, "ia", "IA's gap to BP grows with depth (Kunin et al.)", "digits MLP")
    holds(mlp, "sa", "SA, non-local, matches BP (Kunin et al.)", "digits MLP grid")
    holds(mlp, "kp", "KP matches BP (Akrout et al.; Kunin et al.)", "digits MLP grid")
    holds(mlp, "ss", "Sign-symmetry holds up (Liao et al.; Xiao et al.)", "digits MLP grid")
    angles = _angle_by_width(mlp, "fa") if mlp else {}
    claim = f"Narrow layers hinder FA's alignment ({LIT}: a larger angle at the narrowest width)"
    if len(angles) < 2:
        missing.append(claim)
    else:
        (w0, a0), (w1, a1) = next(iter(angles.items())), list(angles.items())[-1]
        text = f"{claim}: fa's mean angle {a0:.1f} deg at width {w0}, {a1:.1f} at width {w1}"
        (agree if a0 > a1 else disagree).append(text)
    gaps = _gap_by_depth(conv, "dfa") if conv else {}
    claim = f"DFA fails on conv nets ({LIT})"
    if not gaps:
        missing.append(claim)
    else:
        d, g = list(gaps.items())[-1]
        text = (
            f"{claim}: dfa's gap to BP is {g:.1f} points on ResNet with {d} blocks per "
            f"stage (fails = more than {BREAKING_GAP:.0f})"
        )
        (agree if g > BREAKING_GAP else disagree).append(text)
    return agree, disagree, missing


def section(sweeps: dict[str, list[dict[str, Any]]], epochs: int, conv_epochs: int) -> list[str]:
    """The ``docs/results.md`` section of the study, from the sweeps' trial records."""
    mlp = summarize(sweeps.get("breaking-mlp", []))
    conv = summarize(sweeps.get("breaking-conv", []))
    _, depths, widths = _axes(mlp)
    _, blocks, _ = _axes(conv)
    out = [
        "## Where each rule breaks: depth x width, each rule at its own best learning rate",
        "",
        "Every rule over a grid of the digits MLP (depth = hidden layers: "
        f"{_list(depths)}; width = units per layer: {_list(widths)}; {epochs} epochs) and a "
        f"conv ladder (`resnet20` with {_list(blocks)} blocks per stage on the synthetic image "
        f"set, {conv_epochs} epochs). Each grid point is a Ray Tune "
        "search over `optim.lr` with ASHA early stopping, inside the same job; a point's "
        "value is its best trial that trained every epoch. The gap is BP's best accuracy at "
        "the same point minus the rule's, in points; a rule is broken where the gap exceeds "
        f"{BREAKING_GAP:.0f}. Heat maps of the gap and the final mean angle per rule are "
        "artifacts of each sweep's MLflow parent run (`breaking-point/`) and "
        "`docs/breaking-mlp-gap.png`, `docs/breaking-conv-gap.png`.",
        "",
    ]
    if mlp:
        out += ["### Digits MLP", "", *table(mlp), "", *_bp_failed_note(mlp, ladder=False)]
    if conv:
        out += ["### Conv ladder (ResNet, blocks per stage)", "", *table(conv, ladder=True), ""]
        out += _bp_failed_note(conv, ladder=True)
    agree, disagree, missing = _claims(mlp, conv)
    out += ["Agrees:", ""] + ([f"- {c}." for c in agree] or ["- none."]) + [""]
    out += ["Disagrees or not reproduced:", ""]
    out += ([f"- {c}." for c in disagree] or ["- none."]) + [""]
    if missing:
        out += ["Not measured (rule or grid missing): " + "; ".join(missing) + ".", ""]
    return out
